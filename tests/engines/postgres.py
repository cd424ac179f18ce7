"""Fixtures for a real postgres started by the tests (filled in by issue 18)."""
