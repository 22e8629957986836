"""Request dependencies shared by the REST API and the web pages, as ``Annotated`` aliases, so
handlers never repeat ``Depends``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from db.models import Participant, Role
from db.session import new_session
from services.auth import authenticate
from services.errors import AuthError, ForbiddenError


def _session() -> Iterator[Session]:
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]
_bearer = HTTPBearer(auto_error=False)


def _participant(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Participant:
    if credentials is None:
        raise AuthError("this endpoint needs a bearer token: send 'Authorization: Bearer <token>'")
    return authenticate(session, credentials.credentials)


def _organizer(participant: Annotated[Participant, Depends(_participant)]) -> Participant:
    if participant.role != Role.organizer:
        raise ForbiddenError("this endpoint is for organizers")
    return participant


def _optional_participant(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Participant | None:
    return None if credentials is None else authenticate(session, credentials.credentials)


def _worker(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Participant:
    if credentials is None:
        raise AuthError("this endpoint needs a bearer token: send 'Authorization: Bearer <token>'")
    return authenticate(session, credentials.credentials, worker=True)


CurrentParticipant = Annotated[Participant, Depends(_participant)]
#: The participant a bearer token names, or None without one (a wrong token is still a 401).
OptionalParticipant = Annotated[Participant | None, Depends(_optional_participant)]
OrganizerDep = Annotated[Participant, Depends(_organizer)]
#: A compute worker's account (role ``worker``); every other role is refused (403).
WorkerDep = Annotated[Participant, Depends(_worker)]
