"""Intake: every way a submission comes in, in one order (design §4, §5, §7).

:func:`create_submission` takes any kind and always does the same four steps:

1. **cheap refusals**, nothing stored yet: the tier exists and takes this kind, the metadata
   fits, the day's quota has room (an early, unlocked look), the tier has a dataset, and what
   the kind needs before its upload (a well-formed image reference; the script base image);
2. **store the upload**, streamed to disk with the kind's cap and a sha256;
3. **the kind's validator**: a result file is validated in a memory-limited child process; an
   archive is checked and loaded by the daemon; a link is pulled from an allow-listed
   registry; a local image name is looked up, and must be the participant's own
   (:mod:`~services.submissions.ownership`: else the 404 of a name the daemon lacks); a script
   is checked without unpacking it;
4. **insert**, after the quota is checked again under the participant's lock (another upload
   may have taken the last slot meanwhile), and the upload kept under the submission's id;
   the image recorded as the participant's (how it arrived), and a submission identical to
   another participant's earlier one flagged for organizers (``duplicate_of``).
   An artifact the server runs, sent to a blind tier (Hidden), is also recorded once per other
   blind tier with a dataset (:func:`harness.tiers.run_tiers`): a *child* submission
   (``parent_id``), same artifact and method, uncharged (the quota counts the Hidden one), run
   and scored on that tier like any other. One artifact scored on all three tiers is what makes
   a Certified method row (design §7).

A refusal at any step leaves nothing behind: no row, no file, no quota charged, and no image
on the daemon that this submission brought in (an archive it loaded or an image it pulled is
removed again, unless it was there before or another submission uses it).

:func:`accept` is the other half, for every caller that queues work: it commits, undoes the
intake if the commit fails, and only then sends the task (:mod:`services.worker.dispatch`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from docker.errors import DockerException
from requests import RequestException
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.settings import Settings, get_settings
from db.models import Dataset, ImageArrival, Participant, Role, Status, Submission
from harness.errors import ImageError, PlatformError
from harness.formats import validate_result_isolated
from harness.sandbox import ImageInfo, inspect_image, load_image_archive, parse_reference, pull_image
from harness.sandbox.inventory import image_ids, remove_image, untag
from harness.sandbox.runner import PLATFORM
from harness.sandbox.scripts import check_script
from harness.tiers import SANDBOXED_KINDS, TIER_RULES, Kind, run_tiers
from services.access import rules_of
from services.datasets import active_dataset, result_expectation
from services.errors import NotFoundError, ServiceError
from services.submissions.ownership import duplicate_of, may_submit, no_such_image, record_owner
from services.submissions.quota import check_quota
from services.submissions.sandbox import publish_image
from services.submissions.storage import discard, keep, stream_to_disk, uploads_dir
from services.worker import dispatch

__all__ = ["INTAKES", "MAX_TEXT", "Pending", "accept", "check_metadata", "create_submission"]

log = logging.getLogger(__name__)

#: Longest method name, description and source (characters; the API's schema states the same limits).
MAX_TEXT = {"method": 200, "description": 4000, "source": 500}


@dataclass(frozen=True)
class _Intake:
    """One way in: the stored kind and the upload cap (None: nothing is uploaded)."""

    kind: Kind
    cap: Callable[[Settings], int] | None


#: How each way in is stored, and its upload's cap.
INTAKES = {
    "hdf5": _Intake(Kind.hdf5, lambda s: s.max_upload_bytes),
    "archive": _Intake(Kind.container, lambda s: s.max_image_bytes),
    "image": _Intake(Kind.container, None),
    "script": _Intake(Kind.script, lambda s: s.max_script_bytes),
}


@dataclass
class _Found:
    """What a kind's validator established."""

    image: str | None = None
    digest: str | None = None
    #: Keep the upload as ``<id>.<suffix>`` (None: the upload is not kept).
    suffix: str | None = None
    #: What this intake brought onto the daemon, taken back if the submission is refused.
    brought: _Brought | None = None
    #: How the image came to be the participant's (None: it was already, or no image).
    arrival: ImageArrival | None = None


@dataclass(frozen=True)
class _Brought:
    """An image an intake put on the daemon: ``new`` when the daemon did not hold it before
    (then it goes whole), else only the name this intake gave it (``ref``, if any) goes."""

    image_id: str
    new: bool
    ref: str | None = None


@dataclass
class Pending:
    """A submission recorded but not committed yet, and how to take its intake back."""

    submission: Submission
    files: list[Path] = field(default_factory=list)
    images: list[_Brought] = field(default_factory=list)

    def undo(self, session: Session) -> None:
        """Remove what the intake stored: its files, and the images it brought onto the daemon
        that no recorded submission uses."""
        discard(*self.files)
        _take_back_images(session, self.images)


def check_metadata(*, method: str, description: str, source: str) -> None:
    for name, value in (("method", method), ("description", description), ("source", source)):
        if len(value) > MAX_TEXT[name]:
            raise ServiceError(f"{name} is {len(value)} characters; the limit is {MAX_TEXT[name]}")
        if "\x00" in value:  # PostgreSQL cannot store it
            raise ServiceError(f"{name} contains a NUL character")


def _tier_for(kind: Kind) -> str:
    """The one tier that takes ``kind`` (the container and script routes name no tier)."""
    tiers = [t for t, rules in TIER_RULES.items() if kind in rules.kinds]
    if len(tiers) != 1:
        raise ServiceError(f"name the tier for a {kind} submission: one of {', '.join(tiers)}")
    return tiers[0]


def _check_kind(tier: str, kind: Kind) -> None:
    rules = rules_of(tier)
    if kind in rules.kinds:
        return
    takes = [t for t, r in TIER_RULES.items() if kind in r.kinds]
    what = "HDF5 results" if kind == Kind.hdf5 else f"{kind} submissions"
    raise ServiceError(f"{what} are for the {', '.join(takes)} tiers; the {tier} tier takes a {rules.submit_as}")


def _platform_unavailable(exc: Exception) -> PlatformError:
    return PlatformError(
        f"the container platform is unavailable ({type(exc).__name__}); nothing was recorded, submit again later"
    )


def _script_base(settings: Settings) -> ImageInfo:
    try:
        return inspect_image(settings.script_image)
    except ImageError:
        raise PlatformError(
            f"the script base image {settings.script_image} is not installed on this server; tell the organizers"
        ) from None
    except (DockerException, RequestException) as exc:
        raise _platform_unavailable(exc) from None


def _validate(
    session: Session,
    intake: str,
    *,
    participant: Participant,
    path: Path | None,
    image: str | None,
    dataset: Dataset,
    settings: Settings,
    base: ImageInfo | None,
) -> _Found:
    """Step 3: the kind's own validator, on the stored upload (or the image reference)."""
    if intake == "hdf5":
        assert path is not None
        # In a child process: libhdf5 parsing a hostile file must not take the API down.
        validate_result_isolated(path, result_expectation(dataset, max_bytes=settings.max_upload_bytes))
        return _Found(suffix="h5")
    if intake == "script":
        assert path is not None and base is not None
        return _Found(
            image=settings.script_image, digest=base.id, suffix=check_script(path), arrival=ImageArrival.script
        )
    try:
        if intake == "image" and not parse_reference(image or "").registry:
            info = _local_image(image or "", lambda image_id: may_submit(session, participant, image_id))
            organizers = ImageArrival.organizer if participant.role == Role.organizer else None
            return _Found(image=image, digest=info.id, arrival=organizers)
        # An archive or a link brings an image onto the daemon: note what was there before, so
        # a refusal removes only what this submission brought.
        before = image_ids()
        if intake == "archive":
            assert path is not None
            info = load_image_archive(path, max_bytes=settings.max_image_bytes, owner=participant.id)
            name = info.tags[0]  # edx-arena-sub/<participant id>/<short id>:latest, the server's own name
        else:
            info, name = pull_image(
                image or "",
                allowlist=settings.registries,
                max_bytes=settings.max_image_bytes,
                timeout=settings.pull_timeout_seconds,
            )
    except (DockerException, RequestException) as exc:
        raise _platform_unavailable(exc) from None
    new = info.id not in before
    # A link's pinned name is the registry's, not ours to remove when the image stays.
    ref = name if intake == "archive" else None
    return _Found(
        image=name,
        digest=info.id,
        brought=_Brought(info.id, new=new, ref=ref) if new or ref else None,
        arrival=ImageArrival.archive if intake == "archive" else ImageArrival.link,
    )


def _local_image(name: str, may_submit: Callable[[str], bool]) -> ImageInfo:
    """An image the daemon already has, named without a registry: looked up, never pulled, and
    only if ``may_submit`` its id; a name that is not the submitter's gets the answer of a name
    the daemon lacks, before anything else about the image is said."""
    try:
        info = inspect_image(name)
    except ImageError as exc:
        if exc.message.startswith("no image "):
            raise no_such_image(name) from None
        raise
    if not may_submit(info.id):
        raise no_such_image(name)
    if (info.os, info.architecture) != PLATFORM:
        raise ImageError(f"the image is for {info.os}/{info.architecture}; the server runs linux/amd64 images")
    return info


def create_submission(
    session: Session,
    *,
    participant: Participant,
    kind: str,
    tier: str | None = None,
    upload: BinaryIO | None = None,
    image: str | None = None,
    method: str = "",
    description: str = "",
    source: str = "",
) -> Pending:
    """Check, store, validate and record a submission (flushed, not committed): ``kind`` is
    ``hdf5`` (a result file for ``tier``), ``archive`` (a ``docker save`` upload), ``image``
    (a registry link or a local image name) or ``script`` (a ``.py`` or a zip with ``main.py``).
    Hand the result to :func:`accept`.

    Raises the refusal (400/404/413/422/429/503) in the order of the module docstring, with
    nothing left behind.
    """
    intake = INTAKES.get(kind)
    if intake is None:
        raise ServiceError(f"unknown submission kind {kind!r}; kinds are {', '.join(INTAKES)}")
    # 1. Cheap refusals: a pull or an upload can take minutes, and a load leaves an image.
    tier = tier or _tier_for(intake.kind)
    _check_kind(tier, intake.kind)
    check_metadata(method=method, description=description, source=source)
    check_quota(session, participant=participant, tier=tier)
    dataset = active_dataset(session, tier)
    # The other blind tiers the artifact runs on; one without a dataset yet is left out.
    elsewhere = [d for t in run_tiers(tier, intake.kind)[1:] if (d := _dataset_or_none(session, t)) is not None]
    settings = get_settings()
    if kind == "image":
        parse_reference(image or "")  # an invalid reference is refused before the daemon sees it
    base = _script_base(settings) if kind == "script" else None
    pending_files: list[Path] = []
    brought: list[_Brought] = []
    try:
        # 2. Store the upload.
        path = sha256 = None
        if intake.cap is not None:
            if upload is None:
                raise ServiceError(f"a {kind} submission needs a file")
            path, sha256, _ = stream_to_disk(upload, directory=uploads_dir(), max_bytes=intake.cap(settings))
            pending_files.append(path)
        # 3. The kind's validator.
        found = _validate(
            session,
            kind,
            participant=participant,
            path=path,
            image=image,
            dataset=dataset,
            settings=settings,
            base=base,
        )
        if found.brought:
            brought.append(found.brought)
        # 4. Insert, the quota checked again under the participant's lock.
        check_quota(session, participant=participant, tier=tier, lock=True)
        submission = Submission(
            participant=participant,
            dataset=dataset,
            tier=tier,
            kind=intake.kind,
            image=found.image,
            image_digest=found.digest,
            method=method,
            description=description,
            source=source,
            file_sha256=sha256 if found.suffix else None,
        )
        session.add(submission)
        session.flush()
        if found.arrival is not None and found.digest:
            record_owner(session, participant, found.digest, found.arrival)
        submission.duplicate_of = duplicate_of(session, submission)
        if intake.kind in SANDBOXED_KINDS:
            # Compute hosts pull it from the server's registry, pinned by digest (no-op unset).
            publish_image(submission)
        if path is not None and found.suffix:
            final = keep(path, name=f"{submission.id}.{found.suffix}")
            pending_files = [final]
            if intake.kind == Kind.script:
                submission.script_path = str(final)
            else:
                submission.file_path = str(final)
        else:
            discard(path)  # an archive is loaded; its tar is not kept
            pending_files = []
        for other in elsewhere:
            _add_child(session, submission, other)
        return Pending(submission, files=pending_files, images=brought)
    except BaseException:
        discard(*pending_files)
        _take_back_images(session, brought)
        raise


def _dataset_or_none(session: Session, tier: str) -> Dataset | None:
    try:
        return active_dataset(session, tier)
    except NotFoundError:
        return None


def _add_child(session: Session, parent: Submission, dataset: Dataset) -> Submission:
    """The server's run of ``parent``'s artifact on ``dataset``'s tier: the same image or
    script and method, uncharged, its own outcome and scores."""
    assert TIER_RULES[dataset.tier].takes(Kind(parent.kind), server_run=True)
    child = Submission(
        participant=parent.participant,
        dataset=dataset,
        tier=dataset.tier,
        kind=parent.kind,
        image=parent.image,
        image_digest=parent.image_digest,
        script_path=parent.script_path,
        file_sha256=parent.file_sha256,
        method=parent.method,
        description=parent.description,
        source=parent.source,
        charged=False,
        parent=parent,
        duplicate_of=parent.duplicate_of,  # the organizers' plagiarism signal is the artifact's
    )
    session.add(child)
    session.flush()
    return child


def _take_back_images(session: Session, brought: list[_Brought]) -> None:
    """Remove what refused intakes brought onto the daemon: a new image whole, unless a recorded
    submission uses it (the same archive, accepted for another submission meanwhile); on an image
    that was there before, only the name this intake gave it, unless a submission records it."""
    if not brought:
        return
    session.rollback()  # release the participant's lock before talking to the daemon
    for item in brought:
        used = select(Submission.id).where(Submission.image_digest == item.image_id).limit(1)
        try:
            if item.new and session.scalar(used) is None:
                remove_image(item.image_id)
            elif (
                item.ref and session.scalar(select(Submission.id).where(Submission.image == item.ref).limit(1)) is None
            ):
                untag(item.ref)
        except Exception:  # the refusal stands; a leftover image is only disk space
            log.warning("could not remove image %s of a refused submission", item.image_id, exc_info=True)


def accept(session: Session, pending: Pending | Submission) -> Submission:
    """Commit the recorded submission (or a rescored one), undo its intake if the commit fails,
    then send its task. A message that cannot be sent is not an error: the row is queued and
    the reaper sends it again."""
    if isinstance(pending, Submission):
        pending = Pending(pending)
    try:
        session.commit()
    except BaseException:
        session.rollback()
        pending.undo(session)
        raise
    submission = pending.submission
    # The artifact's runs on the other blind tiers (a new submission's, or a rescore's) go too.
    for run in (submission, *submission.children):
        if run.status == Status.queued:
            dispatch.send(run.id, run.kind)
    return submission
