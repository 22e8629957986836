import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from db.models import Participant, Role, Status, Submission
from services.api.deps import OrganizerDep, SessionDep
from services.api.schemas import DatasetPublic, DatasetSeed, ParticipantCreate, ParticipantCreated, SubmissionCreated, TokenCreated
from services.auth import create_participant, issue_token, revoke_token
from services.datasets import seed_tier, upload_tier
from services.errors import NotFoundError
from services.settings import get_settings
from services.submissions import queue, stream_to_disk, update_status

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/tiers/{tier}/dataset", status_code=status.HTTP_201_CREATED)
def generate_dataset(tier: str, body: DatasetSeed, session: SessionDep, _: OrganizerDep) -> DatasetPublic:
    """Generate the tier's scenes from a seed and make them the active dataset."""
    row = seed_tier(session, tier=tier, seed=body.seed, preset=body.preset)
    session.commit()
    return DatasetPublic.model_validate(row)


@router.post("/tiers/{tier}/dataset/upload", status_code=status.HTTP_201_CREATED)
def upload_dataset(tier: str, file: Annotated[UploadFile, File()], session: SessionDep, _: OrganizerDep) -> DatasetPublic:
    """Upload a full dataset file (with truth), validated before it replaces the active one."""
    settings = get_settings()
    path, _, _ = stream_to_disk(file.file, directory=settings.storage_dir / "uploads", max_bytes=settings.max_image_bytes)
    try:
        row = upload_tier(session, tier=tier, path=path)
        session.commit()
    finally:
        path.unlink(missing_ok=True)
    return DatasetPublic.model_validate(row)


@router.post("/participants", status_code=status.HTTP_201_CREATED)
def add_participant(body: ParticipantCreate, session: SessionDep, _: OrganizerDep) -> ParticipantCreated:
    """Create a participant (or organizer) and issue its first token, shown only this once."""
    role = Role.organizer if body.organizer else Role.participant
    participant, token_row, token = create_participant(session, name=body.name, team=body.team, role=role)
    session.commit()
    return ParticipantCreated(
        id=participant.id, name=participant.name, team=participant.team, role=participant.role, token=token, token_id=token_row.id
    )


@router.post("/participants/{participant_id}/tokens", status_code=status.HTTP_201_CREATED)
def add_token(participant_id: int, session: SessionDep, _: OrganizerDep) -> TokenCreated:
    participant = session.get(Participant, participant_id)
    if participant is None:
        raise NotFoundError(f"no participant with id {participant_id}")
    row, token = issue_token(session, participant=participant)
    session.commit()
    return TokenCreated(token_id=row.id, token=token)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(token_id: int, session: SessionDep, _: OrganizerDep) -> None:
    revoke_token(session, token_id=token_id)
    session.commit()


@router.post("/submissions/{submission_id}/rescore", status_code=status.HTTP_202_ACCEPTED)
def rescore(submission_id: str, session: SessionDep, _: OrganizerDep) -> SubmissionCreated:
    """Queue a submission again; rows already written for this scoring version are kept, new versions add rows."""
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFoundError(f"no submission {submission_id!r}")
    update_status(submission, status=Status.queued)
    session.commit()
    queue(submission.id, submission.kind)
    return SubmissionCreated(id=submission.id, status=submission.status)
