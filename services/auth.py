"""Bearer tokens: issued once in clear, stored as sha256; roles participant, organizer and
worker (a compute host's: its tokens reach only the worker endpoints, ``/api/v1/worker/…``)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.settings import get_settings
from db.models import ApiToken, Participant, Role
from services.errors import AuthError, ConflictError, ForbiddenError, NotFoundError

__all__ = ["ORGANIZER_NAME", "authenticate", "create_participant", "issue_token", "revoke_token"]

ORGANIZER_NAME = "organizer"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session, *, participant: Participant, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    token = secrets.token_urlsafe(32)
    row = ApiToken(participant=participant, token_sha256=_digest(token), prefix=token[:8], expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, token


def create_participant(
    session: Session, *, name: str, team: str = "", role: Role = Role.participant
) -> tuple[Participant, ApiToken, str]:
    if name == ORGANIZER_NAME:
        raise ConflictError(f"the name {name!r} is reserved for the built-in organizer account")
    if session.scalar(select(Participant).where(Participant.name == name)) is not None:
        raise ConflictError(f"a participant named {name!r} already exists")
    participant = Participant(name=name, team=team or name, role=role)
    session.add(participant)
    session.flush()
    row, token = issue_token(session, participant=participant)
    return participant, row, token


def revoke_token(session: Session, *, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"no token with id {token_id}")
    row.revoked_at = datetime.now(UTC)


def _builtin_organizer(session: Session) -> Participant:
    """The account behind ``EDX_ORGANIZER_TOKEN``, created on first use."""
    query = select(Participant).where(Participant.name == ORGANIZER_NAME)
    organizer = session.scalar(query)
    if organizer is None:
        session.add(Participant(name=ORGANIZER_NAME, team="organizers", role=Role.organizer))
        try:
            session.commit()
        except IntegrityError:  # a concurrent first request created it
            session.rollback()
        organizer = session.scalar(query)
    return organizer


WORKER_ONLY = "a worker token reaches only the worker endpoints (/api/v1/worker/...)"


def authenticate(session: Session, token: str, *, worker: bool = False) -> Participant:
    """The participant a bearer token belongs to; ``AuthError`` says why a token is refused.

    A worker's token is refused everywhere but the worker endpoints (``worker=True``), and
    those refuse every other role: a compute host can neither submit, read boards as someone,
    nor administer; a participant or organizer cannot claim runs or fetch their inputs.
    """
    participant = _authenticate(session, token)
    if worker != (participant.role == Role.worker):
        if worker:
            raise ForbiddenError("this endpoint is for compute workers (edx-arena admin create-worker)")
        raise AuthError(WORKER_ONLY)
    return participant


def _authenticate(session: Session, token: str) -> Participant:
    # Issued tokens are URL-safe ASCII. Anything else (a header's latin-1 bytes, a form's
    # surrogates) cannot match one, and hmac.compare_digest raises TypeError on non-ASCII str.
    if not token.isascii():
        raise AuthError("invalid token")
    if hmac.compare_digest(token.encode(), get_settings().organizer_token.encode()):
        return _builtin_organizer(session)
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == _digest(token)))
    if row is None:
        raise AuthError("invalid token")
    if row.revoked_at is not None:
        raise AuthError("this token was revoked; ask the organizer for a new one")
    expires = row.expires_at
    if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) < datetime.now(UTC):
        raise AuthError("this token has expired; ask the organizer for a new one")
    return row.participant
