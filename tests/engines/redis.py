"""Fixtures for a real redis started by the tests (filled in by issue 18)."""
