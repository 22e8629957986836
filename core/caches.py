"""Process-wide state built from the settings (the settings object, the database engine, the
broker connection, cached pages) and the one way to drop all of it when the settings change
(tests do, between stacks): each owner registers how to drop its own with :func:`on_reset`, and
:func:`reset` runs them in registration order, the settings' first, since everything else is
built from them."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["on_reset", "reset"]

_resets: list[Callable[[], object]] = []


def on_reset(drop: Callable[[], object]) -> Callable[[], object]:
    """Register ``drop`` (usable as a decorator); it must be safe to call at any time."""
    _resets.append(drop)
    return drop


def reset() -> None:
    """Drop every registered process-wide cache, in registration order."""
    for drop in list(_resets):
        drop()
