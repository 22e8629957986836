"""Who may see what: the one place the server decides what each tier and each submission
discloses, and to whom (design §3, §5, §7). The API, the web pages and the pictures all ask here.

The tier-level answers come from the harness's rules table (:data:`harness.tiers.TIER_RULES`)
and the dataset row's stored ``truth_in_view``; nothing here compares tier names.

==========================  ==================================================================
what                        who may see it
==========================  ==================================================================
a tier's measurements       anyone, where the tier is ``downloadable`` (Public, Dev, Standard)
a scene's mean spectrum     anyone, where the tier is ``pictured``
a scene's truth maps        anyone, where the dataset's view carries the truth
                            (Public; Standard when the organizer published it)
a submission                its owner and organizers (others get the 404 of a missing id)
its maps x̂                  the same, for a stored HDF5 result on a ``pictured`` tier
its error |x̂ − x|           the same, where the truth is in the view
its run log                 organizers whole; owners whole where the tier's measurements are
                            downloadable, else what ``EDX_HIDDEN_LOG_POLICY`` lets through
                            (:mod:`harness.sandbox.disclosure`)
its runtime, peak memory    the same; rounded up to whole seconds and MiB where not whole
anything derived from θ     organizers; participants only where θ is published
                            (``discloses_true_spec``: Public, Standard with published truth);
                            elsewhere :func:`visible_metrics` drops ``spec_error`` from scores
its provenance              anyone once scored; before that its owner and organizers
its image's name and id     its owner and organizers (an image is its owner's to submit:
                            :mod:`services.submissions.ownership`); others see it was server-run
whose duplicate it is       organizers only (``duplicate_of``, a plagiarism signal)
==========================  ==================================================================
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import Dataset, Kind, Outcome, Participant, Role, Run, Status, Submission
from harness.sandbox.disclosure import LogPolicy, participant_log, shown_memory, shown_runtime, shown_steered
from harness.tiers import TIER_RULES, TIERS, TierRules
from services.errors import ForbiddenError, NotFoundError

__all__ = [
    "SUBMISSION_PICTURES",
    "TIER_PICTURES",
    "TRUE_SPEC_FIELDS",
    "can_download",
    "can_picture",
    "can_picture_truth",
    "discloses_true_spec",
    "get_submission",
    "may_view",
    "rules_of",
    "shows_image",
    "shows_true_spec",
    "submission_pictures",
    "visible_duplicate",
    "visible_figures",
    "visible_log",
    "visible_metrics",
    "visible_provenance",
]

TIER_PICTURES = ("maps", "spectrum")
SUBMISSION_PICTURES = ("maps", "error")


def rules_of(tier: str) -> TierRules:
    """The rules of ``tier``; an unknown tier is a 404 naming the known ones."""
    rules = TIER_RULES.get(tier)
    if rules is None:
        raise NotFoundError(f"unknown tier {tier!r}; tiers are {', '.join(TIERS)}")
    return rules


def can_download(tier: str) -> None:
    """Refuse (403) the measurements of a tier nobody may download."""
    if not rules_of(tier).downloadable:
        raise ForbiddenError(f"the {tier} tier's measurements are never downloadable; submit a container image")


def can_picture(tier: str, picture: str, *, of_submission: bool = False) -> None:
    """Refuse a picture name that does not exist (404) or a tier never pictured (403)."""
    names = SUBMISSION_PICTURES if of_submission else TIER_PICTURES
    if picture not in names:
        what = "submission" if of_submission else "tier"
        raise NotFoundError(f"no {what} picture {picture!r}; pictures are {', '.join(names)}")
    if not rules_of(tier).pictured:
        if of_submission:
            raise ForbiddenError(f"a {tier.capitalize()}-tier answer is never pictured: it would show the {tier} scene")
        raise ForbiddenError(f"nothing of the {tier} tier is ever shown: its scenes stay on the server")


def can_picture_truth(row: Dataset, *, against: bool = False) -> None:
    """Refuse (403) a picture of ``row``'s truth (or, ``against``, of an error against it)
    unless the participants' view carries the truth."""
    if row.truth_in_view:
        return
    if against:
        raise ForbiddenError(f"the {row.tier} tier's truth is never shown, so neither is the error against it")
    raise ForbiddenError(
        f"the {row.tier} tier's truth is never shown; truth maps are pictured where the download includes them (public)"
    )


def may_view(viewer: Participant | None, submission: Submission) -> bool:
    """A submission is its owner's and the organizers' to see."""
    return viewer is not None and (viewer.role == Role.organizer or submission.participant_id == viewer.id)


def get_submission(session: Session, *, submission_id: str, viewer: Participant) -> Submission:
    """Owner or organizer only; others get the same 404 as for a missing id, so ids don't leak."""
    submission = session.get(Submission, submission_id)
    if submission is None or not may_view(viewer, submission):
        raise NotFoundError(f"no submission {submission_id!r}")
    return submission


def visible_provenance(session: Session, *, submission_id: str, viewer: Participant | None) -> Submission:
    """Provenance is public once a submission is scored; before that, owner or organizer only."""
    submission = session.get(Submission, submission_id)
    if submission is None or (submission.status != Status.scored and not may_view(viewer, submission)):
        raise NotFoundError(f"no submission {submission_id!r}")
    return submission


def submission_pictures(submission: Submission) -> tuple[bool, bool]:
    """(maps, error): which pictures of this submission exist for its owner."""
    if not rules_of(submission.tier).pictured or submission.kind != Kind.hdf5 or not submission.file_path:
        return False, False
    return True, bool(submission.dataset.truth_in_view)


def _sees_everything(submission: Submission, viewer: Participant | None) -> bool:
    """Organizers see a run whole; so does everyone where the tier's measurements are
    downloadable anyway (nothing the run read is secret)."""
    return (viewer is not None and viewer.role == Role.organizer) or rules_of(submission.tier).downloadable


def visible_log(submission: Submission, viewer: Participant) -> str | None:
    """What ``viewer`` may read of the submission's run log: the whole capped log, or what
    :mod:`harness.sandbox.disclosure` lets through under ``EDX_HIDDEN_LOG_POLICY``."""
    if _sees_everything(submission, viewer):
        return submission.log_tail
    policy = LogPolicy(mode=get_settings().hidden_log_policy)
    return participant_log(submission.log_tail, succeeded=submission.outcome == Outcome.succeeded, policy=policy)


def visible_figures(
    submission: Submission, viewer: Participant | None, row: Submission | Run | None = None
) -> tuple[float | None, int | None]:
    """``(runtime_seconds, peak_memory_bytes)`` of ``row`` (the submission itself, or one of its
    runs) as ``viewer`` (None: anonymous) may see them: exact, or rounded up to whole seconds
    and MiB where the run read data nobody may see (the exfiltration budget of docs/sandbox.md)."""
    row = submission if row is None else row
    if _sees_everything(submission, viewer):
        return row.runtime_seconds, row.peak_memory_bytes
    return shown_runtime(row.runtime_seconds), shown_memory(row.peak_memory_bytes)


def discloses_true_spec(row: Dataset) -> bool:
    """Whether figures derived from the true θ of ``row`` (``|θ̂ − θ|``) may reach participants:
    only where θ is published (design §6)."""
    return rules_of(row.tier).discloses_true_spec(truth_in_view=bool(row.truth_in_view))


#: Fields of a score's ``metrics`` derived from the true θ: ``|θ̂_clamped − θ|`` per parameter,
#: which for a θ̂ at the bottom of a published range *is* ``θ − low`` (issue 16.1). Everything
#: else a score row carries is audited in docs/sandbox.md ("What each tier discloses"):
#: ``spec_clamped`` depends on θ̂ and the published ranges only.
TRUE_SPEC_FIELDS = ("spec_error",)


def shows_true_spec(submission: Submission, viewer: Participant | None) -> bool:
    """Whether ``viewer`` may see the figures of ``submission``'s scores derived from the true
    θ: organizers always, others only where the dataset publishes θ."""
    return _organizer(viewer) or discloses_true_spec(submission.dataset)


def visible_metrics(submission: Submission, viewer: Participant | None, metrics: dict) -> dict:
    """A score row's ``metrics`` as ``viewer`` may see them: without :data:`TRUE_SPEC_FIELDS`
    (at any depth: the tier row nests its scenes) where :func:`shows_true_spec` says no; the
    figures a run's output steers exactly coarsened (:func:`harness.sandbox.disclosure.shown_steered`)
    where the run read measurements nobody may see."""
    if not shows_true_spec(submission, viewer):
        metrics = _without_true_spec(metrics)
    return metrics if _sees_everything(submission, viewer) else shown_steered(metrics)


def _without_true_spec(value):
    if isinstance(value, dict):
        return {k: _without_true_spec(v) for k, v in value.items() if k not in TRUE_SPEC_FIELDS}
    if isinstance(value, list):
        return [_without_true_spec(v) for v in value]
    return value


def _organizer(viewer: Participant | None) -> bool:
    return viewer is not None and viewer.role == Role.organizer


def shows_image(submission: Submission, viewer: Participant | None) -> bool:
    """Whether ``viewer`` may see the name and digest of the image ``submission`` ran: a
    participant's image only to its owner and organizers (anyone else holding them would have
    a name to try; issue 16.2); a script's, the server's public base image, to anyone."""
    return submission.kind != Kind.container or may_view(viewer, submission)


def visible_duplicate(submission: Submission, viewer: Participant | None) -> str | None:
    """The earlier identical submission of another participant, for organizers only."""
    return submission.duplicate_of if _organizer(viewer) else None
