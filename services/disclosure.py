"""What a viewer may see of a submission's run: organizers the whole capped log and the exact
figures; owners of Hidden-tier runs (and, in public provenance, everyone else) what
:mod:`harness.sandbox.disclosure` lets through (``EDX_HIDDEN_LOG_POLICY``), with runtime and
peak memory rounded up to whole seconds and MiB (the exfiltration budget of docs/sandbox.md).

The API and the web pages both call these functions, so the rule lives in one place.
"""

from __future__ import annotations

from db.models import Outcome, Participant, Role, Run, Submission
from harness.sandbox.disclosure import LogPolicy, participant_log, shown_memory, shown_runtime
from services.settings import get_settings

__all__ = ["visible_figures", "visible_log"]


def _sees_everything(submission: Submission, viewer: Participant | None) -> bool:
    return (viewer is not None and viewer.role == Role.organizer) or submission.tier != "hidden"


def visible_log(submission: Submission, viewer: Participant) -> str | None:
    if _sees_everything(submission, viewer):
        return submission.log_tail
    policy = LogPolicy(mode=get_settings().hidden_log_policy)
    return participant_log(submission.log_tail, succeeded=submission.outcome == Outcome.succeeded, policy=policy)


def visible_figures(
    submission: Submission, viewer: Participant | None, row: Submission | Run | None = None
) -> tuple[float | None, int | None]:
    """``(runtime_seconds, peak_memory_bytes)`` of ``row`` (the submission itself, or one of its
    runs) as ``viewer`` (None: anonymous) may see them."""
    row = submission if row is None else row
    if _sees_everything(submission, viewer):
        return row.runtime_seconds, row.peak_memory_bytes
    return shown_runtime(row.runtime_seconds), shown_memory(row.peak_memory_bytes)
