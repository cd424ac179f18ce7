"""Real engines started by the tests themselves: PostgreSQL, Redis and an S3 API (moto).

Each module holds the pytest fixtures of one engine; tests/conftest.py registers them all.
A fixture whose engine is not installed skips its test, naming what is missing
(`.ci/system-deps` installs PostgreSQL and Redis as root).
"""
