"""Nothing is lost: what a stopped worker or API left behind is requeued (design §9).

:func:`reap_and_requeue` runs at API start, at worker start and every half lease in each worker
(:func:`start_reaper`): runs whose lease expired are requeued (or failed uncharged once out of
attempts, :func:`services.submissions.state.reap_expired`), queued submissions no worker
claimed in ``queued_stale_seconds`` are sent again (their message may be lost), and the
sandbox containers of dead runs are removed first, so a rerun does not compete with them.
"""

from __future__ import annotations

import logging
import threading
import time

from core.settings import get_settings
from db.session import new_session
from harness.tiers import SANDBOXED_KINDS
from services.submissions.run import remove_orphan_containers
from services.submissions.state import reap_expired, stale_queued
from services.worker import dispatch

__all__ = ["reap_and_requeue", "remove_orphans", "start_reaper"]

log = logging.getLogger(__name__)


def reap_and_requeue(*, include_stale_queued: bool = True) -> list[str]:
    """Requeue runs whose worker died (expired lease), removing the containers they left,
    and send again queued submissions no worker claimed in ``queued_stale_seconds`` (their
    message may be lost). Returns the ids sent."""
    with new_session() as session:
        todo = reap_expired(session)
        session.commit()
        if include_stale_queued:
            todo += stale_queued(session)
            session.commit()
    kinds = dict(todo)
    if any(kind in SANDBOXED_KINDS for kind in kinds.values()):
        remove_orphans()  # before the rerun: a dead run's container still holds CPU and memory
    for submission_id, kind in kinds.items():
        dispatch.send(submission_id, kind)
    if kinds:
        log.warning("requeued %d submission(s): %s", len(kinds), ", ".join(kinds))
    return list(kinds)


def remove_orphans() -> list[str]:
    """Remove containers left by dead runs; a process without Docker access just logs it."""
    try:
        with new_session() as session:
            removed = remove_orphan_containers(session)
    except Exception as exc:  # docker unreachable: HDF5 scoring still works
        log.warning("could not check for leftover sandbox containers: %s", exc)
        return []
    if removed:
        log.warning("removed %d leftover sandbox container(s): %s", len(removed), ", ".join(removed))
    return removed


def start_reaper() -> threading.Thread:
    """A daemon thread that reaps expired leases and resends stale queued submissions, every
    half lease."""
    settings = get_settings()
    period = max(min(settings.lease_seconds, settings.queued_stale_seconds) / 2, 1.0)

    def loop() -> None:
        while True:
            try:
                reap_and_requeue()
            except Exception:
                log.warning("reaping expired leases failed; trying again in %.0f s", period, exc_info=True)
            time.sleep(period)

    thread = threading.Thread(target=loop, name="lease-reaper", daemon=True)
    thread.start()
    return thread
