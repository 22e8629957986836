"""Tables (SQLAlchemy 2). Score rows are append-only; a submission's state changes only
through :mod:`services.submissions.state` (its transition table).

Schema changes go through Alembic (``db/migrations``), never ``create_all``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from core import clock
from harness.methods import UNNAMED, method_key
from harness.sandbox.model import Outcome
from harness.tiers import Kind

__all__ = [
    "TERMINAL",
    "ApiToken",
    "Base",
    "BoardEntry",
    "BoardRule",
    "Dataset",
    "ImageArrival",
    "ImageOwner",
    "Kind",
    "Outcome",
    "Participant",
    "Role",
    "Run",
    "Score",
    "Status",
    "Submission",
    "Trust",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, timezone-aware UTC, from the injectable :mod:`core.clock`."""
    return clock.now()


class Base(DeclarativeBase):
    pass


class Role(StrEnum):
    participant = "participant"
    organizer = "organizer"
    #: A compute host's account: its tokens reach only /api/v1/worker/... (services/auth.py).
    worker = "worker"


class Status(StrEnum):
    queued = "queued"
    running = "running"
    scoring = "scoring"
    scored = "scored"
    failed = "failed"


#: A submission in one of these states is finished: a task for it is a no-op.
TERMINAL = (Status.scored, Status.failed)


class Trust(StrEnum):
    """An organizer's override of the automatic Certified rule (design §7)."""

    granted = "granted"
    revoked = "revoked"


class Participant(Base):
    __tablename__ = "participants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    team: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default=Role.participant)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    tokens: Mapped[list[ApiToken]] = relationship(back_populates="participant", order_by="ApiToken.id")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    participant: Mapped[Participant] = relationship(back_populates="tokens")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        Index(
            "uq_datasets_active_tier", "tier", unique=True, sqlite_where=text("active"), postgresql_where=text("active")
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    tier: Mapped[str] = mapped_column(String(20), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    operator_version: Mapped[str] = mapped_column(String(40))
    preset: Mapped[str] = mapped_column(String(20))
    #: The generator seed (None for an uploaded dataset); server-side only, never in a view.
    seed: Mapped[int | None] = mapped_column(BigInteger)
    #: ``harness.formats.ResultExpectation.as_dict()`` without ``max_bytes``: lets the API
    #: validate an upload without opening the measurement file.
    expectation: Mapped[dict | None] = mapped_column(JSON)
    full_path: Mapped[str] = mapped_column(Text)
    view_path: Mapped[str] = mapped_column(Text)
    #: The participants' view carries the truth (x_true and the true θ): the tier's rule
    #: (``harness.tiers.TIER_RULES``), or on the Standard track the organizer's choice.
    truth_in_view: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    #: One active dataset per tier; older ones stay for the scores that name them.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    tier: Mapped[str] = mapped_column(String(20), index=True)
    kind: Mapped[str] = mapped_column(String(20), default=Kind.hdf5)
    method: Mapped[str] = mapped_column(String(200), default="")
    #: The method's normal form (:func:`harness.methods.method_key`), set with ``method``: a
    #: board entry is a (participant, method_key) pair.
    method_key: Mapped[str] = mapped_column(String(200), default=UNNAMED, server_default=UNNAMED, index=True)
    #: A run of a Hidden-tier artifact on another blind tier: the Hidden submission it belongs
    #: to (same image or script, run by the server, uncharged). None for a submission of its own.
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("submissions.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(500), default="")
    file_path: Mapped[str | None] = mapped_column(Text)
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    image: Mapped[str | None] = mapped_column(String(500))
    image_digest: Mapped[str | None] = mapped_column(String(100))
    #: The image in the server's registry, pinned by manifest digest (``host:port/…@sha256:…``),
    #: which compute hosts pull; None without EDX_IMAGE_REGISTRY.
    image_ref: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default=Status.queued, index=True)
    outcome: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(String(1024))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    charged: Mapped[bool] = mapped_column(Boolean, default=True)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    runtime_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    log_tail: Mapped[str | None] = mapped_column(Text)
    #: Organizer's mark: a reference baseline is shown on boards but does not compete.
    baseline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    #: ``None``: the automatic Certified rule; otherwise a :class:`Trust` set by an organizer.
    trust: Mapped[str | None] = mapped_column(String(20))
    #: Script submissions: the stored ``.py`` or ``.zip``.
    script_path: Mapped[str | None] = mapped_column(Text)
    #: Organizers only: the earliest submission of another participant with the same image
    #: digest (and script) or the same result file: a plagiarism signal (issue 16.2).
    duplicate_of: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    participant: Mapped[Participant] = relationship()
    dataset: Mapped[Dataset] = relationship()
    runs: Mapped[list[Run]] = relationship(order_by="Run.attempt")
    parent: Mapped[Submission | None] = relationship(remote_side="Submission.id", back_populates="children")
    children: Mapped[list[Submission]] = relationship(back_populates="parent", order_by="Submission.tier")

    @validates("method")
    def _keep_method_key(self, _key: str, method: str | None) -> str | None:
        self.method_key = method_key(method)
        return method


class Run(Base):
    """One attempt at a submission: who ran it, when, and how it ended."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("submission_id", "attempt", name="uq_run_attempt"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(40))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    runtime_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)


class Score(Base):
    """One row per (submission, scoring version, scene); ``scene_id == ""`` is the tier row."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("submission_id", "scoring_version", "scene_id", name="uq_score_once"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    scene_id: Mapped[str] = mapped_column(String(100), default="")
    scoring_version: Mapped[str] = mapped_column(String(40))
    operator_version: Mapped[str] = mapped_column(String(40))
    harness_version: Mapped[str] = mapped_column(String(40))
    dataset_hash: Mapped[str] = mapped_column(String(64))
    submission_hash: Mapped[str] = mapped_column(String(100))
    score: Mapped[float] = mapped_column(Float)
    blind: Mapped[float] = mapped_column(Float)
    standard: Mapped[float] = mapped_column(Float)
    psnr: Mapped[float] = mapped_column(Float)
    ssim: Mapped[float] = mapped_column(Float)
    consistency: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict] = mapped_column(JSON)
    #: 95 % block-bootstrap interval of ``score`` (None for rows scored before intervals).
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    #: Per-tile sufficient statistics behind the interval, reused by paired comparisons.
    tile_stats: Mapped[dict | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ImageArrival(StrEnum):
    """How an image came to belong to a participant (issue 16.2)."""

    #: Their ``docker save`` upload, loaded under ``edx-arena-sub/<participant id>/…``.
    archive = "archive"
    #: Their link, pulled from an allow-listed registry.
    link = "link"
    #: The base image their script ran in: recorded, but no right to submit it as an image.
    script = "script"
    #: An organizer's own submission of a local image, or an organizer's grant to a participant.
    organizer = "organizer"


class ImageOwner(Base):
    """An image (its content-addressed id) belongs to a participant: only they, and organizers,
    may submit it by a local name or id. One row per participant and image; the first arrival
    is kept."""

    __tablename__ = "image_owners"
    __table_args__ = (UniqueConstraint("participant_id", "image_id", name="uq_image_owner"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    #: ``sha256:…``, the daemon's image id.
    image_id: Mapped[str] = mapped_column(String(100), index=True)
    how: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BoardEntry(Base):
    """A method's entry on a tier's board: which of its scored submissions stands for it, and
    what ranking reads of that submission. Derived data, kept by :mod:`db.board_entries` in the
    transaction that changes what it is derived from; ``view`` is ``all`` or ``certified``
    (the pick among Certified submissions only)."""

    __tablename__ = "board_entries"
    __table_args__ = (Index("ix_board_entries_board", "view", "tier", "score"),)
    view: Mapped[str] = mapped_column(String(20), primary_key=True)
    tier: Mapped[str] = mapped_column(String(20), primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), primary_key=True)
    method_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    baseline: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: What the Certified rule (``services.metadata``) reads, so ranking a board needs no join.
    kind: Mapped[str] = mapped_column(String(20))
    image_digest: Mapped[str | None] = mapped_column(String(100))
    trust: Mapped[str | None] = mapped_column(String(20))
    parent_id: Mapped[str | None] = mapped_column(String(36))


class BoardRule(Base):
    """The rule ``board_entries`` was built under (one row): a process with another scoring
    version or pick policy rebuilds the table before it reads it."""

    __tablename__ = "board_rules"
    id: Mapped[int] = mapped_column(primary_key=True)
    scoring_version: Mapped[str] = mapped_column(String(40))
    policy: Mapped[str] = mapped_column(String(20))
