"""Watching a run: metrics, HTTP, dashboard, read API; :mod:`.watcher` is what the runner starts."""
