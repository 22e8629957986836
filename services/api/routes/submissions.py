"""Submissions: HDF5 results (Public, Dev, Standard), container images (Hidden), status."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status
from sqlalchemy import select

from db.models import Score
from services.api.deps import CurrentParticipant, SessionDep
from services.api.schemas import ContainerCreate, ScoreRow, SubmissionCreated, SubmissionPublic
from services.disclosure import visible_log
from services.submissions import create_hdf5_submission, discard_upload, get_submission, queue

router = APIRouter(prefix="/api/v1/submissions", tags=["submissions"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def submit_result(
    session: SessionDep,
    participant: CurrentParticipant,
    tier: Annotated[str, Form()],
    file: Annotated[UploadFile, File()],
    method: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    source: Annotated[str, Form()] = "",
) -> SubmissionCreated:
    """Upload an HDF5 result (Public, Dev, Standard); validated before it is queued."""
    submission = create_hdf5_submission(
        session, participant=participant, tier=tier, upload=file.file, method=method, description=description, source=source
    )
    try:
        session.commit()
    except Exception:  # no row: no file either
        discard_upload(submission)
        raise
    queue(submission.id, submission.kind)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.post("/container", status_code=status.HTTP_202_ACCEPTED)
def submit_container(session: SessionDep, participant: CurrentParticipant, body: ContainerCreate) -> SubmissionCreated:
    """Submit an image the server's daemon already has (``{"image": "name:tag"}``) to the Hidden tier."""
    from services.containers import create_container_submission

    submission = create_container_submission(
        session, participant=participant, image=body.image, method=body.method, description=body.description, source=body.source
    )
    session.commit()
    queue(submission.id, submission.kind)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.post("/container/archive", status_code=status.HTTP_202_ACCEPTED)
def submit_container_archive(
    session: SessionDep,
    participant: CurrentParticipant,
    file: Annotated[UploadFile, File()],
    method: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    source: Annotated[str, Form()] = "",
) -> SubmissionCreated:
    """Submit a ``docker save`` archive to the Hidden tier (streamed, size-capped, then loaded)."""
    from services.containers import create_archive_submission

    submission = create_archive_submission(
        session, participant=participant, upload=file.file, method=method, description=description, source=source
    )
    session.commit()
    queue(submission.id, submission.kind)
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.get("/{submission_id}")
def read_submission(submission_id: str, session: SessionDep, participant: CurrentParticipant) -> SubmissionPublic:
    """Status, outcome, diagnostics and scores: the owner's or an organizer's only."""
    submission = get_submission(session, submission_id=submission_id, viewer=participant)
    scores = session.scalars(select(Score).where(Score.submission_id == submission.id).order_by(Score.id)).all()
    public = SubmissionPublic.model_validate(submission)
    public.log_tail = visible_log(submission, participant)
    public.scores = [ScoreRow.model_validate(s) for s in scores]
    return public
