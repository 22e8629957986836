"""The one settings object, read from the environment (prefix ``EDX_``).

Defaults are the embedded stack: a SQLite file and a filesystem message broker under
``data_dir``, so nothing has to be started. The compose stack sets ``EDX_DATABASE_URL``
(PostgreSQL) and ``EDX_BROKER_URL`` (Redis). Only ``services/`` and ``db/`` read settings;
the harness never does.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.caches import on_reset

__all__ = [
    "PLACEHOLDER_SECRET",
    "WORKER_QUEUES",
    "SandboxSettings",
    "Settings",
    "SettingsError",
    "get_settings",
    "load_sandbox_settings",
    "load_settings",
]

PLACEHOLDER_SECRET = "changethis"
#: The queues a worker of each role consumes (``EDX_WORKER_ROLE``, ``edx-arena worker --role``):
#: ``runs`` (sandboxed runs: Docker, no storage) and ``scoring`` (reads the truth: storage).
WORKER_QUEUES = {"all": ("runs", "scoring"), "scoring": ("scoring",), "compute": ("runs",)}


class SandboxSettings(BaseSettings):
    """What a sandboxed run is held to, and the caps on what a sandboxed submission brings in.

    The server reads them as part of :class:`Settings`; ``edx-arena run`` on a participant's
    machine reads them alone (no server settings exist there), so a local run gets the very
    limits the server would give it under the same ``EDX_SANDBOX_*`` names.
    """

    model_config = SettingsConfigDict(env_prefix="EDX_", extra="ignore")

    # Sandbox defaults for the Hidden tier (design §5).
    sandbox_cpus: float = 1.0
    sandbox_memory_bytes: int = 2 * 2**30
    sandbox_pids: int = 256
    sandbox_wall_seconds: int = 1800
    sandbox_output_bytes: int = 512 * 2**20
    sandbox_log_bytes: int = 2**20
    sandbox_runtime: str | None = None
    #: Run an image as its own non-root ``USER`` instead of 65534 (a root image is still refused).
    sandbox_allow_image_user: bool = False
    max_image_bytes: int = Field(default=4 * 2**30, gt=0)
    # Python script submissions: the reference base image they run in, and the upload cap.
    script_image: str = "edx-arena/base:bookworm"
    max_script_bytes: int = Field(default=16 * 2**20, gt=0)


class Settings(SandboxSettings):
    model_config = SettingsConfigDict(env_prefix="EDX_", extra="ignore")

    environment: Literal["development", "production"] = "production"
    #: Everything the embedded stack writes: database, broker folders, storage.
    data_dir: Path = Path("var")
    #: Empty: a SQLite file ``data_dir/edx-arena.db``.
    database_url: str = ""
    #: ``filesystem://`` is the embedded broker (folders under ``data_dir/broker``).
    broker_url: str = "filesystem://"
    #: Filesystem broker: how often an idle worker looks for new messages (seconds).
    broker_polling_interval: float = Field(default=0.1, gt=0)
    #: Empty: ``data_dir/storage`` (datasets, uploads, run folders).
    storage_dir: Path | None = None

    #: Bearer token of the built-in organizer account (created on first use).
    organizer_token: str = PLACEHOLDER_SECRET

    max_upload_bytes: int = Field(default=256 * 2**20, gt=0)
    #: A request body must have arrived this long after the request began, or it is refused (408).
    body_timeout_seconds: float = Field(default=900, gt=0)
    #: The sign-in cookies' Secure flag; unset: on in production, off in development (plain http).
    cookie_secure: bool | None = None
    # Submissions per participant per tier per UTC day; 0 = unlimited.
    quota_public: int = Field(default=0, ge=0)
    quota_dev: int = Field(default=5, ge=0)
    quota_hidden: int = Field(default=2, ge=0)
    leaderboard_policy: Literal["best", "latest"] = "best"
    #: Mark adjacent entries the paired bootstrap cannot separate as tied (False: classic ranks only).
    leaderboard_ties: bool = True
    #: Method rows one participant may hold on the overall board (their best ones by overall
    #: score), so a team cannot flood it with variants (design §7).
    overall_methods_per_participant: int = Field(default=3, ge=1)
    #: A board is recomputed at most this often per API process (0: on every request).
    leaderboard_cache_seconds: float = Field(default=2.0, ge=0)
    #: Compute board pages in one child process per API process (a slow board never holds the
    #: API's interpreter lock while it serves cached pages); false: in a thread.
    leaderboard_process: bool = True

    # Reliability: a run holds a lease its worker renews; an expired lease is reaped and the
    # submission requeued, up to max_attempts, then failed as platform_error (not charged).
    lease_seconds: int = Field(default=120, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    #: A submission queued this long without a worker claiming it has its message sent again
    #: (the broker may have lost it, e.g. a Redis restart without persistence).
    queued_stale_seconds: int = Field(default=300, gt=0)

    # Image links (design §5): registries a Hidden-tier image may be pulled from, comma
    # separated, each ``host[:port]`` or ``host[:port]/path-prefix``; empty: no pulls at all.
    registry_allowlist: str = ""
    #: A pull (resolve + download) taking longer is stopped and refused.
    pull_timeout_seconds: float = Field(default=300, gt=0)
    #: What owners see of a Hidden-tier run's log (harness.sandbox.disclosure): ``failures``
    #: (the error excerpt of failed runs only, the default of docs/sandbox.md's budget),
    #: ``always``, ``never`` or ``full``.
    hidden_log_policy: Literal["failures", "always", "never", "full"] = "failures"

    #: ``json``: one JSON object per log line with the submission id (services/logs.py;
    #: the compose stack's choice); ``text``: readable lines (the CLI and embedded default).
    log_format: Literal["text", "json"] = "text"

    # Compute hosts (docs/operations.md "Adding a compute host"). A registry the server pushes
    # every accepted Hidden image to (``host:port[/prefix]``), pinned by manifest digest; empty:
    # images stay on the server's own daemon (the embedded default).
    image_registry: str = ""
    #: What ``edx-arena worker`` does: ``all`` (runs and scoring, the embedded default),
    #: ``scoring`` (only scoring, next to the storage), ``compute`` (only runs, over HTTP, no
    #: database); ``auto``: ``compute`` when EDX_API_URL and EDX_WORKER_TOKEN are set and
    #: EDX_DATABASE_URL is not, else ``all``.
    worker_role: Literal["auto", "all", "scoring", "compute"] = "auto"
    #: A compute worker's server and its token (``edx-arena admin create-worker NAME``).
    api_url: str = ""
    worker_token: str = ""
    #: A compute worker keeps this many pulled images and inputs (by content hash) in its cache.
    image_cache_size: int = Field(default=8, ge=1)
    input_cache_size: int = Field(default=4, ge=1)

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, url: str) -> str:
        # The common spellings of a PostgreSQL URL all mean the psycopg 3 driver we ship.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        if url and not url.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError(
                "must be empty (a SQLite file under EDX_DATA_DIR), sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB"
            )
        return url

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, url: str) -> str:
        if not url.startswith(("filesystem://", "redis://", "rediss://")):
            raise ValueError("must be filesystem:// (the embedded broker) or redis://HOST:PORT/DB")
        return url

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.data_dir = self.data_dir.resolve()
        if self.worker_role == "auto":
            remote = self.api_url and self.worker_token and not self.database_url
            self.worker_role = "compute" if remote else "all"
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'edx-arena.db'}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        if self.cookie_secure is None:
            self.cookie_secure = self.environment == "production"
        # A compute worker holds no secret of the server but its own worker token.
        compute = self.worker_role == "compute"
        if compute and not (self.api_url and self.worker_token):
            raise ValueError(
                "a compute worker needs EDX_API_URL and EDX_WORKER_TOKEN (edx-arena admin create-worker NAME)"
            )
        if not compute and self.environment != "development" and self.organizer_token == PLACEHOLDER_SECRET:
            raise ValueError(
                f"EDX_ORGANIZER_TOKEN is the placeholder {PLACEHOLDER_SECRET!r}; set a secret "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) or EDX_ENVIRONMENT=development"
            )
        return self

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def registries(self) -> list[str]:
        """The allow-list as entries (``EDX_REGISTRY_ALLOWLIST``, comma separated)."""
        return [e.strip() for e in self.registry_allowlist.split(",") if e.strip()]

    def quota(self, tier: str) -> int:
        """Daily submissions allowed on ``tier``; 0 means unlimited."""
        return {"public": self.quota_public, "dev": self.quota_dev, "hidden": self.quota_hidden}.get(tier, 0)


@lru_cache
def get_settings() -> Settings:
    return Settings()


on_reset(get_settings.cache_clear)


class SettingsError(Exception):
    """A setting is missing or wrong; the message names it (``EDX_…``) and says how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _describe(exc: ValidationError) -> str:
    """One clause per bad setting, each naming its environment variable and what it must be."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:  # a field: name its variable and echo the value it was given
            name = "EDX_" + str(error["loc"][0]).upper()
            parts.append(f"{name}={str(error.get('input', ''))[:80]!r} is not valid: {message}")
        else:  # the model's own check names its variables in the message
            parts.append(message)
    return "; ".join(parts)


def load_settings() -> Settings:
    """:func:`get_settings`, with a bad or missing setting reported as one :class:`SettingsError`
    line instead of pydantic's multi-line ``ValidationError``."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def load_sandbox_settings() -> SandboxSettings:
    """The sandbox settings alone, for a run on a participant's machine (``edx-arena run``):
    none of the server's settings (its organizer token, database) are read or needed. A bad
    value is one :class:`SettingsError` line, as in :func:`load_settings`."""
    try:
        return SandboxSettings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
