"""Content-addressed blob store and the SQLite catalog. Knows nothing of HTTP or Trio."""
