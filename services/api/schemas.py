"""API payloads (pydantic), separate from the tables: ``XCreate`` in, ``XPublic`` out, and the
``Page(data, count)`` envelope for lists."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from harness.tiers import PRESETS, TIER_RULES, TIERS, Kind
from services.leaderboard import BOARDS
from services.submissions.intake import MAX_TEXT

T = TypeVar("T")

# The names the handlers accept, as enums in the OpenAPI document: an unknown one is a 422
# that lists the valid names, and clients (and fuzzers) see them without reading the code.
TierName = Literal[TIERS]
#: Tiers that take an HDF5 result; the hidden tier takes an image or a script.
ResultTier = Literal[tuple(t for t, rules in TIER_RULES.items() if Kind.hdf5 in rules.kinds)]
BoardName = Literal[BOARDS]
PresetName = Literal[tuple(PRESETS)]


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int


class TierPublic(BaseModel):
    name: str
    ranges: dict[str, tuple[float, float]]
    downloadable: bool
    submit_as: str
    has_dataset: bool
    content_hash: str | None = None
    preset: str | None = None


class SubmissionCreated(BaseModel):
    id: str
    status: str


class ContainerCreate(BaseModel):
    image: str = Field(min_length=1, max_length=500)
    method: str = Field(default="", max_length=MAX_TEXT["method"])
    description: str = Field(default="", max_length=MAX_TEXT["description"])
    source: str = Field(default="", max_length=MAX_TEXT["source"])


class ScoreRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    scene_id: str
    scoring_version: str
    score: float
    blind: float
    standard: float
    psnr: float
    ssim: float
    consistency: float
    metrics: dict
    #: 95 % block-bootstrap interval of ``score`` (None for rows scored before edx-score-v2).
    ci_low: float | None = None
    ci_high: float | None = None


class TierRunPublic(BaseModel):
    """One of an artifact's runs (a Hidden image or script runs on every blind tier): its own
    submission id, outcome and current tier score, and the dataset it was scored against."""

    id: str
    tier: str
    status: str
    outcome: str | None
    error_message: str | None = None
    score: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    certified: bool = False
    dataset_hash: str
    runtime_seconds: float | None = None
    peak_memory_bytes: int | None = None


class SubmissionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    tier: str
    kind: str
    method: str
    description: str
    source: str
    status: str
    outcome: str | None
    error_message: str | None
    attempt: int
    #: False when a platform failure gave the quota slot back.
    charged: bool
    file_sha256: str | None
    image_digest: str | None
    exit_code: int | None
    runtime_seconds: float | None
    peak_memory_bytes: int | None
    log_tail: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scores: list[ScoreRow] = []
    #: The normal form of ``method``: a board entry is a (participant, method key) pair.
    method_key: str = ""
    #: A run of a Hidden artifact on another tier: the Hidden submission (None otherwise).
    parent_id: str | None = None
    #: The artifact's runs on every blind tier, this one included, Hidden first (empty for an
    #: uploaded result: it is scored on its own tier only).
    tier_runs: list[TierRunPublic] = []
    #: Organizers only: the earlier submission of another participant this one is identical
    #: to (same image, script or result file), a plagiarism signal; None for everyone else.
    duplicate_of: str | None = None


class EntryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    #: None for a reference baseline (shown, not ranked).
    rank: int | None
    participant: str
    team: str
    method: str
    source: str
    score: float
    psnr: float | None
    ssim: float | None
    certified: bool
    submission_id: str | None
    submitted_at: datetime | None
    tiers: dict[str, dict] = {}
    ci_low: float | None = None
    ci_high: float | None = None
    tie_group: int | None = None
    baseline: bool = False
    description: str = ""


class DatasetSeed(BaseModel):
    seed: int = Field(ge=0, lt=2**63)
    preset: PresetName = "default"
    #: Standard tier only: include the truth in the participants' download (default: no).
    with_truth: bool = False


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    tier: str
    content_hash: str
    operator_version: str
    preset: str
    created_at: datetime


class ParticipantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    team: str = Field(default="", max_length=200)
    organizer: bool = False


class ParticipantCreated(BaseModel):
    id: int
    name: str
    team: str
    role: str
    token: str
    token_id: int


class TokenCreate(BaseModel):
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenCreated(BaseModel):
    token_id: int
    token: str


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ParticipantPublic(BaseModel):
    id: int
    name: str
    team: str
    role: str
    tokens: list[TokenPublic]


class ProvenanceScore(BaseModel):
    """One tier score row's provenance (design §6): what was scored, by what, against what."""

    model_config = ConfigDict(from_attributes=True)
    scoring_version: str
    operator_version: str
    harness_version: str
    dataset_hash: str
    #: The result file's sha256, or the run image's id (None where the image is not the
    #: viewer's to see).
    submission_hash: str | None
    score: float
    started_at: datetime
    ended_at: datetime


class ProvenanceRun(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    exit_code: int | None
    runtime_seconds: float | None
    peak_memory_bytes: int | None


class ProvenancePublic(BaseModel):
    """What a leaderboard entry links to: who, what method, which exact file or image, which
    dataset, and the versions that scored it. Never the log or the hidden data."""

    id: str
    participant: str
    team: str
    tier: str
    kind: str
    method: str
    description: str
    source: str
    status: str
    outcome: str | None
    baseline: bool
    trust: str | None
    certified: bool
    #: The server ran it in the sandbox (an image or a script), rather than scoring an upload.
    server_run: bool
    #: HDF5 results and scripts: the uploaded file's sha256.
    file_sha256: str | None
    #: Images: the reference (a link pinned as ``registry/path:tag@sha256:…``); scripts: the base
    #: image. Its owner and organizers only (an image is its owner's to submit): else None.
    image: str | None
    #: The content-addressed id of the image that ran (``sha256:…``); owner and organizers only.
    image_digest: str | None
    dataset_hash: str
    dataset_preset: str
    created_at: datetime
    finished_at: datetime | None
    scores: list[ProvenanceScore]
    runs: list[ProvenanceRun]
    #: A run of a Hidden artifact on another tier: the Hidden submission.
    parent_id: str | None = None
    #: The same artifact's runs on every blind tier (ids, outcomes, scores, dataset hashes).
    tier_runs: list[TierRunPublic] = []


class ImageGrant(BaseModel):
    #: A local name or ``sha256:`` id the server's daemon has.
    image: str = Field(min_length=1, max_length=500)


class ImageOwnerPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    participant_id: int
    image_id: str
    #: archive, link, script or organizer.
    how: str
    created_at: datetime


class BaselineUpdate(BaseModel):
    baseline: bool


class TrustUpdate(BaseModel):
    #: ``granted`` / ``revoked`` override the automatic Certified rule; ``null`` restores it.
    trust: Literal["granted", "revoked"] | None


class MarksPublic(BaseModel):
    id: str
    baseline: bool
    trust: str | None
    certified: bool
