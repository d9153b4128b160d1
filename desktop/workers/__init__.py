"""Workers: everything slow runs here, never on the GUI thread — the engine's job on a QThread
(job_worker), short background calls (tasks), thumbnails (thumbnails)."""
