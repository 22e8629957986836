"""Typed inputs and outputs of a sandboxed run (design §5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

__all__ = ["ImageInfo", "Outcome", "RunLimits", "RunResult", "RunSpec"]


class Outcome(StrEnum):
    """Every run ends in exactly one of these."""

    succeeded = "succeeded"
    timeout = "timeout"
    oom_killed = "oom_killed"
    nonzero_exit = "nonzero_exit"
    missing_output = "missing_output"
    invalid_output = "invalid_output"
    output_too_large = "output_too_large"
    image_invalid = "image_invalid"
    platform_error = "platform_error"


@dataclass(frozen=True)
class RunLimits:
    """Sandbox policy; every field is a per-tier setting. Memory + swap equals memory (no swap)."""

    cpus: float = 1.0
    memory_bytes: int = 2 * 2**30
    pids: int = 256
    wall_seconds: float = 1800
    output_bytes: int = 512 * 2**20
    #: Files and directories allowed under /output (a million empty files is a disk attack too).
    output_files: int = 10_000
    #: Directory levels allowed under /output (``/output/a/b`` is two). Bounds the watcher's walk,
    #: which holds one open directory per level; a deeper tree ends the run as output_too_large.
    output_depth: int = 32
    log_bytes: int = 2**20
    #: Size of the tmpfs at /tmp, and of each tmpfs put over a ``VOLUME`` the image declares.
    tmpfs_bytes: int = 256 * 2**20
    network_disabled: bool = True
    read_only_root: bool = True
    user: str = "65534:65534"
    #: Run as the image's own USER (it must be non-root) instead of ``user``.
    allow_image_user: bool = False
    #: An alternative OCI runtime, e.g. gVisor's ``runsc``.
    runtime: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What the daemon knows of an image; ``id`` (``sha256:…``) is what a run pins."""

    id: str
    repo_digest: str | None
    tags: tuple[str, ...]
    user: str
    os: str
    architecture: str
    size: int
    #: The ``VOLUME`` paths of the image's config, as declared.
    volumes: tuple[str, ...] = ()

    @property
    def pinned(self) -> str:
        """The immutable reference a run uses: the content-addressed image id."""
        return self.id


@dataclass
class RunSpec:
    """One run. ``input_path`` is a host file readable by the sandbox user (mode 0644 on a
    traversable path); ``work_dir`` is a host directory of this run, whose ``output``
    subdirectory becomes ``/output``. The run id labels the container (``edx-arena.run``)."""

    run_id: str
    image: str
    input_path: Path
    work_dir: Path
    limits: RunLimits = RunLimits()
    labels: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    environment: dict[str, str] | None = None
    #: Extra host paths bound read-only into the container, ``{host path: container path}``
    #: (a script submission's files at ``/submission``).
    read_only_mounts: dict[str, str] = field(default_factory=dict)
    #: Called on ``/output/result.h5``; a ``FormatError`` makes the outcome ``invalid_output``
    #: and its message is quoted to the owner: use :func:`harness.formats.validate_output`, whose
    #: messages never quote the file (``validate_result``'s do).
    validate_output: Callable[[Path], None] | None = None


@dataclass
class RunResult:
    """How a run ended. ``message`` and ``log`` are for the image's owner; ``output_path`` is
    set only for ``succeeded``."""

    outcome: Outcome
    message: str
    exit_code: int | None = None
    runtime_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    log: str = ""
    image_digest: str | None = None
    output_path: Path | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["outcome"] = str(self.outcome)
        d["output_path"] = str(self.output_path) if self.output_path else None
        return d
