"""Revisions of the results store's schema, oldest first (0001, 0002, ...)."""
