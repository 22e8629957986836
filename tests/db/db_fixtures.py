"""Fixture ``db_url``: a fresh, empty database per test on SQLite AND PostgreSQL (``db_url``), with the
settings pointing at it; PostgreSQL databases are created and dropped around each test."""

from __future__ import annotations

import uuid

import psycopg
import pytest

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _pg(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _forget() -> None:
    from core.settings import get_settings
    from db.session import get_engine, get_sessionmaker

    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_engine, get_sessionmaker, get_settings):
        cached.cache_clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path, monkeypatch):
    name = None
    if request.param == "postgres":
        name = f"edx_arena_test_{uuid.uuid4().hex[:12]}"
        _pg(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    else:
        url = f"sqlite:///{tmp_path / 'var' / 'edx-arena.db'}"
    monkeypatch.setenv("EDX_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("EDX_DATABASE_URL", url)
    monkeypatch.setenv("EDX_ENVIRONMENT", "development")
    _forget()
    yield url
    _forget()
    if name:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
