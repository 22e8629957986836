"""Organizer endpoints: tier datasets, participants and tokens, rescoring."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from core.settings import get_settings
from db.models import Participant, Role
from services.api.page_cache import mark_stale
from services.api.schemas import (
    BaselineUpdate,
    DatasetPublic,
    DatasetSeed,
    ImageGrant,
    ImageOwnerPublic,
    MarksPublic,
    Page,
    ParticipantCreate,
    ParticipantCreated,
    ParticipantPublic,
    SubmissionCreated,
    TierName,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TrustUpdate,
)
from services.auth import create_participant, issue_token, revoke_token
from services.datasets import seed_tier, upload_tier
from services.deps import OrganizerDep, SessionDep
from services.errors import NotFoundError
from services.metadata import is_certified, set_baseline, set_trust
from services.submissions.intake import accept
from services.submissions.ownership import grant
from services.submissions.state import rescore, runs_needing_attention
from services.submissions.storage import stream_to_disk, uploads_dir

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

#: Row ids are 32-bit integer keys (PostgreSQL ``integer``): a larger number names no row, and
#: would overflow the database driver (a 500) before it could say so.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
#: Ten years: any longer window means "all of them", and timedelta overflows near 1.5e12 minutes.
MAX_WINDOW_MINUTES = 10 * 366 * 24 * 60


@router.post("/tiers/{tier}/dataset", status_code=status.HTTP_201_CREATED)
def generate_dataset(tier: TierName, body: DatasetSeed, session: SessionDep, _: OrganizerDep) -> DatasetPublic:
    """Generate the tier's scenes from a seed and make them the active dataset."""
    row = seed_tier(session, tier=tier, seed=body.seed, preset=body.preset, with_truth=body.with_truth)
    session.commit()
    return DatasetPublic.model_validate(row)


@router.post("/tiers/{tier}/dataset/upload", status_code=status.HTTP_201_CREATED)
def upload_dataset(
    tier: TierName,
    file: Annotated[UploadFile, File()],
    session: SessionDep,
    _: OrganizerDep,
    with_truth: Annotated[bool, Form(description="standard tier only: include the truth in the download")] = False,
) -> DatasetPublic:
    """Upload a full dataset file (with truth), validated before it replaces the active one."""
    path, _, _ = stream_to_disk(file.file, directory=uploads_dir(), max_bytes=get_settings().max_image_bytes)
    try:
        row = upload_tier(session, tier=tier, path=path, with_truth=with_truth)
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
        id=participant.id,
        name=participant.name,
        team=participant.team,
        role=participant.role,
        token=token,
        token_id=token_row.id,
    )


@router.get("/participants")
def list_participants(session: SessionDep, _: OrganizerDep) -> Page[ParticipantPublic]:
    """Every participant with its tokens (prefix, expiry, revocation; never the token)."""
    rows = session.scalars(select(Participant).options(selectinload(Participant.tokens)).order_by(Participant.id)).all()
    data = [
        ParticipantPublic(
            id=p.id, name=p.name, team=p.team, role=p.role, tokens=[TokenPublic.model_validate(t) for t in p.tokens]
        )
        for p in rows
    ]
    return Page(data=data, count=len(data))


@router.post("/participants/{participant_id}/tokens", status_code=status.HTTP_201_CREATED)
def add_token(
    participant_id: RowId, session: SessionDep, _: OrganizerDep, body: TokenCreate | None = None
) -> TokenCreated:
    """Issue another token (shown only this once), optionally expiring after ``expires_in_days``."""
    participant = session.get(Participant, participant_id)
    if participant is None:
        raise NotFoundError(f"no participant with id {participant_id}")
    expires = None
    if body is not None and body.expires_in_days is not None:
        expires = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    row, token = issue_token(session, participant=participant, expires_at=expires)
    session.commit()
    return TokenCreated(token_id=row.id, token=token)


@router.post("/participants/{participant_id}/images", status_code=status.HTTP_201_CREATED)
def grant_image(participant_id: RowId, body: ImageGrant, session: SessionDep, _: OrganizerDep) -> ImageOwnerPublic:
    """Hand a local image (a name or ``sha256:`` id the server's daemon has) to a participant,
    who may then submit it by that name or id; participants may submit only their own images."""
    row = grant(session, participant_id=participant_id, image=body.image)
    session.commit()
    return ImageOwnerPublic.model_validate(row)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(token_id: RowId, session: SessionDep, _: OrganizerDep) -> None:
    revoke_token(session, token_id=token_id)
    session.commit()


@router.post("/submissions/{submission_id}/rescore", status_code=status.HTTP_202_ACCEPTED)
def rescore_submission(submission_id: str, session: SessionDep, _: OrganizerDep) -> SubmissionCreated:
    """Queue a finished submission again. Score rows are append-only: the current scoring
    version's rows, if any, are kept; a new scoring version adds its own."""
    submission = accept(session, rescore(session, submission_id=submission_id))
    return SubmissionCreated(id=submission.id, status=submission.status)


@router.put("/submissions/{submission_id}/baseline")
def mark_baseline(submission_id: str, body: BaselineUpdate, session: SessionDep, _: OrganizerDep) -> MarksPublic:
    """Mark (or unmark) a reference baseline: shown on its boards at its score, unranked, not competing."""
    submission = set_baseline(session, submission_id=submission_id, baseline=body.baseline)
    session.commit()
    mark_stale()  # the board generation does not see marks; this process's pages follow at once
    return MarksPublic(
        id=submission.id, baseline=submission.baseline, trust=submission.trust, certified=is_certified(submission)
    )


@router.put("/submissions/{submission_id}/trust")
def mark_trust(submission_id: str, body: TrustUpdate, session: SessionDep, _: OrganizerDep) -> MarksPublic:
    """Grant or revoke the trust badge (overriding the automatic Certified rule), or ``null`` to restore the rule."""
    submission = set_trust(session, submission_id=submission_id, trust=body.trust)
    session.commit()
    mark_stale()  # the board generation does not see marks; this process's pages follow at once
    return MarksPublic(
        id=submission.id, baseline=submission.baseline, trust=submission.trust, certified=is_certified(submission)
    )


class RunAttention(BaseModel):
    """A submission an organizer may need to look at (stuck or retried)."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    participant_id: int
    tier: str
    kind: str
    status: str
    outcome: str | None
    error_message: str | None
    attempt: int
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@router.get("/runs")
def list_runs(
    session: SessionDep,
    _: OrganizerDep,
    state: Annotated[
        Literal["stuck", "retried"],
        Query(
            description="stuck: running with an expired lease, or queued "
            "too long; retried: needed more than one attempt"
        ),
    ],
    older_than_minutes: Annotated[
        float | None,
        Query(
            gt=0,
            le=MAX_WINDOW_MINUTES,
            description="stuck: queued longer than this (default: EDX_QUEUED_STALE_SECONDS)",
        ),
    ] = None,
) -> Page[RunAttention]:
    """Runs needing attention, oldest first (at most 500)."""
    older = timedelta(minutes=older_than_minutes) if older_than_minutes is not None else None
    rows = runs_needing_attention(session, state=state, older_than=older)
    data = [RunAttention.model_validate(r) for r in rows]
    return Page(data=data, count=len(data))
