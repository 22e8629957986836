"""Submissions: HDF5 results (Public, Dev, Standard), container images and Python scripts
(Hidden), status, and public provenance."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status
from sqlalchemy import select

from db.models import Participant, Run, Score, Submission
from harness.tiers import SANDBOXED_KINDS
from services.access import (
    get_submission,
    shows_image,
    visible_duplicate,
    visible_figures,
    visible_log,
    visible_metrics,
)
from services.api.schemas import (
    ContainerCreate,
    ProvenancePublic,
    ProvenanceRun,
    ProvenanceScore,
    ResultTier,
    ScoreRow,
    SubmissionCreated,
    SubmissionPublic,
    TierRunPublic,
)
from services.deps import CurrentParticipant, OptionalParticipant, SessionDep
from services.metadata import artifact_runs, current_tier_row, is_certified, provenance_of
from services.submissions.intake import MAX_TEXT, accept, create_submission

router = APIRouter(prefix="/api/v1/submissions", tags=["submissions"])

# A submission's free text, with its limits in the schema.
MethodForm = Annotated[str, Form(max_length=MAX_TEXT["method"], description="the method's name on the boards")]
DescriptionForm = Annotated[str, Form(max_length=MAX_TEXT["description"])]
SourceForm = Annotated[str, Form(max_length=MAX_TEXT["source"], description="a citation or URL")]


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def submit_result(
    session: SessionDep,
    participant: CurrentParticipant,
    tier: Annotated[ResultTier, Form(description="the hidden tier takes an image or a script instead")],
    file: Annotated[UploadFile, File()],
    method: MethodForm = "",
    description: DescriptionForm = "",
    source: SourceForm = "",
) -> SubmissionCreated:
    """Upload an HDF5 result (Public, Dev, Standard); validated before it is queued."""
    pending = create_submission(
        session,
        participant=participant,
        kind="hdf5",
        tier=tier,
        upload=file.file,
        method=method,
        description=description,
        source=source,
    )
    submission = accept(session, pending)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.post("/container", status_code=status.HTTP_202_ACCEPTED)
def submit_container(session: SessionDep, participant: CurrentParticipant, body: ContainerCreate) -> SubmissionCreated:
    """Submit an image the server's daemon already has (``{"image": "name:tag"}``) to the Hidden tier."""
    pending = create_submission(
        session,
        participant=participant,
        kind="image",
        image=body.image,
        method=body.method,
        description=body.description,
        source=body.source,
    )
    submission = accept(session, pending)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.post("/container/archive", status_code=status.HTTP_202_ACCEPTED)
def submit_container_archive(
    session: SessionDep,
    participant: CurrentParticipant,
    file: Annotated[UploadFile, File()],
    method: MethodForm = "",
    description: DescriptionForm = "",
    source: SourceForm = "",
) -> SubmissionCreated:
    """Submit a ``docker save`` archive to the Hidden tier (streamed, size-capped, then loaded)."""
    pending = create_submission(
        session,
        participant=participant,
        kind="archive",
        upload=file.file,
        method=method,
        description=description,
        source=source,
    )
    submission = accept(session, pending)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.post("/script", status_code=status.HTTP_202_ACCEPTED)
def submit_script(
    session: SessionDep,
    participant: CurrentParticipant,
    file: Annotated[UploadFile, File(description="a .py file, or a zip with main.py at its top level")],
    method: MethodForm = "",
    description: DescriptionForm = "",
    source: SourceForm = "",
) -> SubmissionCreated:
    """Submit a Python script to the Hidden tier: run as ``python3 /submission/main.py`` in the
    reference base image (numpy, scipy, h5py, scikit-image), reading ``/input/measurement.h5``
    and writing ``/output/result.h5``, under the same sandbox as an image."""
    pending = create_submission(
        session,
        participant=participant,
        kind="script",
        upload=file.file,
        method=method,
        description=description,
        source=source,
    )
    submission = accept(session, pending)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.get("/{submission_id}/provenance")
def read_provenance(submission_id: str, session: SessionDep, viewer: OptionalParticipant) -> ProvenancePublic:
    """Where a scored entry comes from: method, file sha256 or image digest, dataset hash and the
    versions of every score row. Public once scored; before that, owner or organizer only."""
    submission, rows = provenance_of(session, submission_id=submission_id, viewer=viewer)
    image_shown = shows_image(submission, viewer)
    server_run = submission.kind in SANDBOXED_KINDS
    scores = [ProvenanceScore.model_validate(r) for r in rows]
    if not image_shown:
        for score in scores:  # an image's hash is its id
            score.submission_hash = None
    return ProvenancePublic(
        id=submission.id,
        participant=submission.participant.name,
        team=submission.participant.team,
        tier=submission.tier,
        kind=submission.kind,
        method=submission.method,
        description=submission.description,
        source=submission.source,
        status=submission.status,
        outcome=submission.outcome,
        baseline=submission.baseline,
        trust=submission.trust,
        certified=is_certified(submission),
        server_run=server_run,
        file_sha256=submission.file_sha256,
        image=submission.image if image_shown else None,
        image_digest=submission.image_digest if image_shown else None,
        dataset_hash=submission.dataset.content_hash,
        dataset_preset=submission.dataset.preset,
        created_at=submission.created_at,
        finished_at=submission.finished_at,
        scores=scores,
        runs=[_provenance_run(submission, run, viewer) for run in submission.runs],
        parent_id=submission.parent_id,
        tier_runs=_tier_runs(session, submission, viewer, errors=False),
    )


def _tier_runs(
    session: SessionDep, submission: Submission, viewer: Participant | None, *, errors: bool = True
) -> list[TierRunPublic]:
    """The artifact's runs side by side, each as ``viewer`` may see its figures; ``errors``:
    with their error messages (the owner's view, not the public provenance)."""
    out = []
    for run in artifact_runs(submission):
        row = current_tier_row(session, run.id)
        shown = TierRunPublic(
            id=run.id,
            tier=run.tier,
            status=run.status,
            outcome=run.outcome,
            error_message=run.error_message if errors else None,
            certified=is_certified(run),
            dataset_hash=run.dataset.content_hash,
        )
        if row is not None:
            shown.score, shown.psnr, shown.ssim, shown.ci_low, shown.ci_high = (
                row.score,
                row.psnr,
                row.ssim,
                row.ci_low,
                row.ci_high,
            )
        shown.runtime_seconds, shown.peak_memory_bytes = visible_figures(run, viewer)
        out.append(shown)
    return out


def _provenance_run(submission: Submission, run: Run, viewer: Participant | None) -> ProvenanceRun:
    out = ProvenanceRun.model_validate(run)
    out.runtime_seconds, out.peak_memory_bytes = visible_figures(submission, viewer, run)
    return out


@router.get("/{submission_id}")
def read_submission(submission_id: str, session: SessionDep, participant: CurrentParticipant) -> SubmissionPublic:
    """Status, outcome, diagnostics and scores: the owner's or an organizer's only."""
    submission = get_submission(session, submission_id=submission_id, viewer=participant)
    scores = session.scalars(select(Score).where(Score.submission_id == submission.id).order_by(Score.id)).all()
    public = SubmissionPublic.model_validate(submission)
    public.log_tail = visible_log(submission, participant)
    public.runtime_seconds, public.peak_memory_bytes = visible_figures(submission, participant)
    public.scores = [ScoreRow.model_validate(s) for s in scores]
    public.tier_runs = _tier_runs(session, submission, participant)
    for row in public.scores:
        row.metrics = visible_metrics(submission, participant, row.metrics)
    public.duplicate_of = visible_duplicate(submission, participant)
    return public
