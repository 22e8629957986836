"""The one settings object, read from the environment (prefix ``EDX_``).

Defaults are the embedded stack: a SQLite file and a filesystem message broker under
``data_dir``, so nothing has to be started. The compose stack sets ``EDX_DATABASE_URL``
(PostgreSQL) and ``EDX_BROKER_URL`` (Redis).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "changethis"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDX_", extra="ignore")

    environment: Literal["development", "production"] = "production"
    data_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = "filesystem://"
    storage_dir: Path | None = None

    #: Bearer token of the built-in organizer account (created on first use).
    organizer_token: str = PLACEHOLDER_SECRET

    max_upload_bytes: int = 256 * 2**20
    max_image_bytes: int = 4 * 2**30
    quota_public: int = 0  # 0 = unlimited
    quota_dev: int = 5
    quota_hidden: int = 2
    leaderboard_policy: Literal["best", "latest"] = "best"

    # Reliability: a run holds a lease its worker renews; an expired lease is reaped.
    lease_seconds: int = 120
    max_attempts: int = 3

    # Sandbox defaults for the Hidden tier (design §5).
    sandbox_cpus: float = 1.0
    sandbox_memory_bytes: int = 2 * 2**30
    sandbox_pids: int = 256
    sandbox_wall_seconds: int = 1800
    sandbox_output_bytes: int = 512 * 2**20
    sandbox_log_bytes: int = 2**20
    sandbox_runtime: str | None = None

    @model_validator(mode="after")
    def _derive(self) -> "Settings":
        self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'edx-arena.db'}"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "storage"
        if self.environment != "development" and self.organizer_token == PLACEHOLDER_SECRET:
            raise ValueError(
                f"EDX_ORGANIZER_TOKEN is the placeholder {PLACEHOLDER_SECRET!r}; set a secret "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) or EDX_ENVIRONMENT=development"
            )
        return self

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def quota(self, tier: str) -> int:
        return {"public": self.quota_public, "dev": self.quota_dev, "hidden": self.quota_hidden}.get(tier, 0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
