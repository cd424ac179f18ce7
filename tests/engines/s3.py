"""Fixtures for a real s3 started by the tests (filled in by issue 18)."""
