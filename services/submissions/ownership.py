"""Whose an image is (issue 16.2): an image belongs to the participant whose archive upload or
link brought it onto the daemon, or to whom an organizer handed it; organizers may submit any
image (baselines). A participant naming an image that is not theirs, by a local name or a
``sha256:`` id, gets the very answer of a name the daemon does not have (404, same body): the
answer never confirms that another team's image exists.

Ownership is recorded by image id (``sha256:…``), so a name moved onto another image, or the
same image under another name, changes nothing. The base image of a script is recorded
(``script``) for the record only: it is the server's image and gives no right to submit it bare.
"""

from __future__ import annotations

from docker.errors import DockerException
from requests import RequestException
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ImageArrival, ImageOwner, Kind, Participant, Role, Submission
from harness.errors import ImageError, PlatformError
from harness.sandbox import ImageInfo, inspect_image, parse_reference
from services.errors import NotFoundError

__all__ = ["duplicate_of", "grant", "may_submit", "no_such_image", "record_owner"]

#: Arrivals that make an image its participant's to submit by name or id.
_OWNING = (ImageArrival.archive, ImageArrival.link, ImageArrival.organizer)


def no_such_image(name: str) -> NotFoundError:
    """The one answer for a local name or id the daemon lacks, or that is not the asker's."""
    return NotFoundError(
        f"no image {name!r} on the server; upload it as a docker save archive, "
        "or link it from an allowed registry (registry.example:5000/team/solver:1.2)"
    )


def may_submit(session: Session, participant: Participant, image_id: str) -> bool:
    """Organizers may submit any image; a participant the images they own."""
    if participant.role == Role.organizer:
        return True
    owned = select(ImageOwner.id).where(
        ImageOwner.participant_id == participant.id,
        ImageOwner.image_id == image_id,
        ImageOwner.how.in_(_OWNING),
    )
    return session.scalar(owned.limit(1)) is not None


def record_owner(session: Session, participant: Participant, image_id: str, how: ImageArrival) -> None:
    """Note that ``image_id`` is ``participant``'s (flushed with the submission; the first
    arrival is kept). A script's base image never replaces an owning arrival."""
    row = session.scalar(
        select(ImageOwner).where(ImageOwner.participant_id == participant.id, ImageOwner.image_id == image_id)
    )
    if row is None:
        session.add(ImageOwner(participant_id=participant.id, image_id=image_id, how=how))
    elif row.how == ImageArrival.script and how != ImageArrival.script:
        row.how = how


def grant(session: Session, *, participant_id: int, image: str) -> ImageOwner:
    """An organizer hands a local image (a name or id the daemon has) to a participant."""
    participant = session.get(Participant, participant_id)
    if participant is None:
        raise NotFoundError(f"no participant {participant_id}")
    parse_reference(image)  # an invalid reference is refused (422) before the daemon sees it
    try:
        info: ImageInfo = inspect_image(image)
    except ImageError:
        raise no_such_image(image) from None
    except (DockerException, RequestException) as exc:
        raise PlatformError(f"the container platform is unavailable ({type(exc).__name__})") from None
    record_owner(session, participant, info.id, ImageArrival.organizer)
    session.flush()
    row = session.scalar(
        select(ImageOwner).where(ImageOwner.participant_id == participant.id, ImageOwner.image_id == info.id)
    )
    assert row is not None
    return row


def duplicate_of(session: Session, submission: Submission) -> str | None:
    """The earliest submission of another participant with the same image (and script file), or
    the same result file: what organizers are shown as a plagiarism signal."""
    if submission.kind == Kind.hdf5:
        if not submission.file_sha256:
            return None
        same = [Submission.file_sha256 == submission.file_sha256]
    else:
        if not submission.image_digest:
            return None
        same = [Submission.image_digest == submission.image_digest]
        if submission.kind == Kind.script:
            same.append(Submission.file_sha256 == submission.file_sha256)
    return session.scalar(
        select(Submission.id)
        .where(
            *same,
            Submission.kind == submission.kind,
            Submission.participant_id != submission.participant_id,
            Submission.id != submission.id,
        )
        .order_by(Submission.created_at)
        .limit(1)
    )
