"""core/clock.py: the process's clock is injectable, and restored after the block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core import clock
from core.clock import ManualClock, SystemClock, use_clock
from db.models import utcnow


def test_a_manual_clock_moves_only_when_told_and_is_restored():
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    with use_clock(ManualClock(start)) as manual:
        assert clock.now() == start == utcnow()  # the tables' timestamps follow it too
        assert clock.monotonic() == 0.0
        manual.advance(90.5)
        assert clock.monotonic() == 90.5 and clock.now() == start + timedelta(seconds=90.5)
    assert isinstance(clock._clock, SystemClock)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5
