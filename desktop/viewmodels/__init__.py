"""View-models: UI state and signals, no widgets. Each wraps one engine helper (discover, run_job,
set_review, bundles, retrieval) so the views only bind to Qt models and signals."""
