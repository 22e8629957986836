"""Database fixtures (tests/database_testing.py): a fresh, empty database per test on SQLite AND
PostgreSQL, the settings pointing at it."""

from database_testing import backend, db_url  # noqa: F401 - fixtures
