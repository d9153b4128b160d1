"""PySide6 desktop app (views, view-models, workers). Built under the desktop issue; it will talk to the
engine only through engine.jobs and read-only engine helpers."""
