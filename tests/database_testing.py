"""The suite's one database fixture module: a fresh database per test on SQLite AND PostgreSQL
(``backend``, and ``db_url`` for tests that need only the URL), a fresh data dir, the settings
pointing at them, and every process-wide cache built from the old settings dropped
(:func:`reset_caches`, through :mod:`core.caches`).

``tests/conftest.py`` puts this folder on ``sys.path``; conftest files import the fixtures from
here (``from database_testing import backend``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from core import caches

__all__ = ["ORGANIZER_TOKEN", "Backend", "backend", "db_url", "drop_backend", "make_backend", "reset_caches"]

ORGANIZER_TOKEN = "test-organizer-token"
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
_PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@dataclass
class Backend:
    kind: str
    data_dir: Path
    env: dict[str, str]


def reset_caches() -> None:
    """Forget everything built from the previous environment (settings, engine, broker pools,
    cached pages): whatever registered itself with :func:`core.caches.on_reset`."""
    caches.reset()


def _pg(sql: str) -> None:
    with psycopg.connect(_PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def make_backend(kind: str, tmp_path: Path, monkeypatch) -> tuple[Backend, str | None]:
    """A fresh database (``sqlite`` file or ``postgres`` database) and data dir; the settings
    point at them. Returns the backend and the PostgreSQL database's name (to drop)."""
    data_dir = tmp_path / "var"
    env = {
        "EDX_DATA_DIR": str(data_dir),
        "EDX_ORGANIZER_TOKEN": ORGANIZER_TOKEN,
        "EDX_ENVIRONMENT": "production",
        "EDX_LEADERBOARD_CACHE_SECONDS": "0",
        # A child process per test stack costs a Python start; tests/services/api/test_api_board_process.py
        # covers the child.
        "EDX_LEADERBOARD_PROCESS": "false",
        # The test clients and the browser speak plain http: a Secure cookie would never come back.
        "EDX_COOKIE_SECURE": "false",
    }
    db_name = None
    if kind == "postgres":
        db_name = f"edx_arena_test_{uuid.uuid4().hex[:12]}"
        _pg(f'CREATE DATABASE "{db_name}"')
        env["EDX_DATABASE_URL"] = f"{PG_SERVER}/{db_name}"
    for key in ("EDX_DATABASE_URL", "EDX_BROKER_URL", "EDX_STORAGE_DIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    return Backend(kind, data_dir, env), db_name


def drop_backend(db_name: str | None) -> None:
    reset_caches()
    if db_name:
        _pg(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, tmp_path, monkeypatch):
    b, db_name = make_backend(request.param, tmp_path, monkeypatch)
    yield b
    drop_backend(db_name)


@pytest.fixture
def db_url(backend) -> str:
    """The URL of ``backend``'s database (empty, not migrated)."""
    from core.settings import get_settings

    return get_settings().database_url
