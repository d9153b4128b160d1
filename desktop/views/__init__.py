"""Views: widgets only. They bind to the view-models' Qt models and signals and call their methods."""
