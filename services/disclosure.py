"""What a viewer may see of a submission's run log: organizers the whole capped log, owners of
Hidden-tier runs what :mod:`harness.sandbox.disclosure` lets through (``EDX_HIDDEN_LOG_POLICY``).

The API and the web pages both call :func:`visible_log`, so the rule lives in one place.
"""

from __future__ import annotations

from core.settings import get_settings
from db.models import Outcome, Participant, Role, Submission
from harness.sandbox.disclosure import LogPolicy, participant_log

__all__ = ["visible_log"]


def visible_log(submission: Submission, viewer: Participant) -> str | None:
    if viewer.role == Role.organizer or submission.tier != "hidden":
        return submission.log_tail
    policy = LogPolicy(mode=get_settings().hidden_log_policy)
    return participant_log(submission.log_tail, succeeded=submission.outcome == Outcome.succeeded, policy=policy)
