"""Prometheus metrics (``GET /metrics``), truthful however many API and worker processes run.

Everything about submissions and runs is read from the database at scrape time, so any API
process reports the same numbers for the whole deployment, and a restart loses nothing:

- ``edx_arena_queue_depth{tier,status}``: submissions waiting (``queued``) or in progress
  (``running``, ``scoring``), every tier and status listed, zeros included;
- ``edx_arena_oldest_queued_seconds``: age of the oldest queued submission (0 when none);
- ``edx_arena_submissions{tier,status,outcome}``: all submissions by state;
- ``edx_arena_runs_total{outcome}``: finished attempts (rows of ``runs``, never deleted, so
  a true counter);
- ``edx_arena_run_duration_seconds{kind}``: histogram of finished attempts' wall time,
  ``ended_at - started_at`` (claim to outcome: scoring included), by submission kind;
- ``edx_arena_container_seconds``: histogram of the sandboxed containers' own run time
  (``runs.runtime_seconds``, Hidden tier only);
- ``edx_arena_database_up``: 0 when the database could not be read (the others are then absent).

Only upload volume is counted in process: ``edx_arena_upload_bytes_total`` (bytes stored by
:func:`services.submissions.storage.stream_to_disk` in *this* API process since it started; sum it
over processes, and use ``rate()``, which handles restarts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, extract, func, select

from db.models import Run, Submission
from db.session import new_session
from harness.tiers import TIERS

__all__ = ["CONTENT_TYPE", "DURATION_BUCKETS", "REGISTRY", "UPLOAD_BYTES", "record_upload", "render"]

log = logging.getLogger(__name__)

#: Seconds: an HDF5 scoring takes ~1-10 s, a container run up to the 30 min wall limit.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
ACTIVE = ("queued", "running", "scoring")

REGISTRY = CollectorRegistry()
UPLOAD_BYTES = Counter(
    "edx_arena_upload_bytes",
    "Bytes of uploads stored by this API process (results, scripts, image archives, datasets).",
    registry=REGISTRY,
)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)


def record_upload(size: int) -> None:
    UPLOAD_BYTES.inc(size)


def _histogram(name: str, doc: str, rows: Iterator[tuple], label_names: list[str]) -> HistogramMetricFamily:
    """``rows``: (labels..., count, sum, count ≤ bucket 1, count ≤ bucket 2, …) from SQL."""
    family = HistogramMetricFamily(name, doc, labels=label_names)
    for row in rows:
        labels = [str(v) for v in row[: len(label_names)]]
        count, total, *cumulative = row[len(label_names) :]
        if not count:
            continue
        buckets = [(repr(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, cumulative)] + [("+Inf", int(count))]
        family.add_metric(labels, buckets, float(total or 0.0))
    return family


class DatabaseCollector(Collector):
    """Reads the deployment's state at every scrape (a handful of aggregate queries)."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("edx_arena_database_up", "1 when the metrics could be read from the database.")
        try:
            families = self._families()
        except Exception as exc:  # a scrape must answer even when the database is down
            log.warning("metrics: the database could not be read (%s: %.200s)", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    @staticmethod
    def _families() -> list[Metric]:
        with new_session() as session:
            dialect = session.get_bind().dialect.name
            if dialect == "sqlite":
                elapsed = (func.julianday(Run.ended_at) - func.julianday(Run.started_at)) * 86400.0
            else:
                elapsed = extract("epoch", Run.ended_at - Run.started_at)

            depth = GaugeMetricFamily(
                "edx_arena_queue_depth", "Submissions waiting or in progress.", labels=["tier", "status"]
            )
            counts = {(t, s): 0 for t in TIERS for s in ACTIVE}
            for tier, status, n in session.execute(
                select(Submission.tier, Submission.status, func.count())
                .where(Submission.status.in_(ACTIVE))
                .group_by(Submission.tier, Submission.status)
            ):
                counts[(tier, status)] = n
            for (tier, status), n in sorted(counts.items()):
                depth.add_metric([tier, status], n)

            oldest = session.scalar(select(func.min(Submission.created_at)).where(Submission.status == "queued"))
            age = GaugeMetricFamily("edx_arena_oldest_queued_seconds", "Age of the oldest queued submission (0: none).")
            if oldest is not None:
                if oldest.tzinfo is None:  # SQLite returns naive UTC
                    oldest = oldest.replace(tzinfo=UTC)
                age.add_metric([], max(0.0, time.time() - oldest.timestamp()))
            else:
                age.add_metric([], 0.0)

            states = GaugeMetricFamily(
                "edx_arena_submissions",
                "Submissions by tier, status and outcome.",
                labels=["tier", "status", "outcome"],
            )
            for tier, status, outcome, n in session.execute(
                select(Submission.tier, Submission.status, Submission.outcome, func.count()).group_by(
                    Submission.tier, Submission.status, Submission.outcome
                )
            ):
                states.add_metric([tier, status, outcome or ""], n)

            runs = CounterMetricFamily("edx_arena_runs", "Finished attempts (runs) by outcome.", labels=["outcome"])
            for outcome, n in session.execute(
                select(Run.outcome, func.count()).where(Run.ended_at.is_not(None)).group_by(Run.outcome)
            ):
                runs.add_metric([outcome or ""], n)

            def bucket_columns(value):
                return [func.count(value), func.sum(value)] + [
                    func.sum(case((value <= b, 1), else_=0)) for b in DURATION_BUCKETS
                ]

            duration = _histogram(
                "edx_arena_run_duration_seconds",
                "Wall time of finished attempts, claim to outcome (seconds).",
                session.execute(
                    select(Submission.kind, *bucket_columns(elapsed))
                    .join(Submission, Run.submission_id == Submission.id)
                    .where(Run.ended_at.is_not(None))
                    .group_by(Submission.kind)
                ),
                ["kind"],
            )
            container = _histogram(
                "edx_arena_container_seconds",
                "Run time of sandboxed containers (seconds, Hidden tier).",
                session.execute(select(*bucket_columns(Run.runtime_seconds)).where(Run.runtime_seconds.is_not(None))),
                [],
            )
        return [depth, age, states, runs, duration, container]


REGISTRY.register(DatabaseCollector())


def render() -> bytes:
    """The exposition text of every metric above."""
    return generate_latest(REGISTRY)
