"""core/caches.py: every process-wide cache built from the settings is dropped by one call,
the settings' first."""

from __future__ import annotations

from core import caches
from core.settings import get_settings


def test_reset_drops_every_registered_cache_in_order(monkeypatch):
    monkeypatch.setattr(caches, "_resets", list(caches._resets))  # registrations of this test only
    calls = []
    caches.on_reset(lambda: calls.append("first"))
    caches.on_reset(lambda: calls.append("second"))
    caches.reset()
    assert calls == ["first", "second"]


def test_the_settings_are_read_again_after_a_reset(monkeypatch):
    monkeypatch.setenv("EDX_ENVIRONMENT", "development")
    monkeypatch.setenv("EDX_QUOTA_DEV", "3")
    caches.reset()
    assert get_settings().quota("dev") == 3
    monkeypatch.setenv("EDX_QUOTA_DEV", "4")
    assert get_settings().quota("dev") == 3  # cached until the reset
    caches.reset()
    assert get_settings().quota("dev") == 4
    monkeypatch.undo()
    caches.reset()  # nothing of this test's settings stays for the next test
