"""model_servers."""
