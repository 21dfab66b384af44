"""The warehouse layers from ``sql/``: :mod:`.layers` creates and refreshes them."""
