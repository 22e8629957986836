"""The sandbox the server gives a run, built in one place from the settings: the limits
(``EDX_SANDBOX_*``), the output validation (the isolated validator, held to the sandbox's output
cap, in the fixed vocabulary of :func:`harness.formats.validate_output`) and how a script runs
in the base image.

Two callers build their runs here: the worker (:mod:`services.submissions.run`) and a
participant's local try (``edx-arena run``, :mod:`services.cli.local`). Whatever the server
holds a run to, the local run is held to as well, because neither has a copy of it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.settings import SandboxSettings, get_settings
from db.models import Submission
from harness.formats import ResultExpectation, validate_output, validate_result_isolated
from harness.sandbox import RunLimits, RunSpec
from harness.sandbox.distribution import push_image
from harness.sandbox.scripts import MOUNT_POINT, script_command

__all__ = ["SCRIPT_ENVIRONMENT", "publish_image", "run_limits", "run_spec"]

#: A script sees a writable HOME for libraries that cache there (the root filesystem is read-only).
SCRIPT_ENVIRONMENT = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "MPLCONFIGDIR": "/tmp"}


def run_limits(settings: SandboxSettings) -> RunLimits:
    """The run's limits from the ``EDX_SANDBOX_*`` settings; what a setting does not name keeps
    :class:`RunLimits`' default (the design's)."""
    return RunLimits(
        cpus=settings.sandbox_cpus,
        memory_bytes=settings.sandbox_memory_bytes,
        pids=settings.sandbox_pids,
        wall_seconds=settings.sandbox_wall_seconds,
        output_bytes=settings.sandbox_output_bytes,
        log_bytes=settings.sandbox_log_bytes,
        runtime=settings.sandbox_runtime,
        allow_image_user=settings.sandbox_allow_image_user,
    )


def run_spec(
    *,
    run_id: str,
    image: str,
    input_path: Path,
    work_dir: Path,
    expect: ResultExpectation,
    settings: SandboxSettings,
    labels: dict[str, str],
    script_files: Path | None = None,
) -> RunSpec:
    """The sandboxed run of ``image`` on ``input_path`` (a view without truth).

    ``expect`` names the scenes and shapes a result must have; its size cap is replaced by the
    sandbox's output cap, so a result is refused at the size the run may write. With
    ``script_files`` (an unpacked script, :func:`harness.sandbox.scripts.unpack_script`) the run
    is the script's: ``python3 -u /submission/main.py`` with those files bound read-only.
    """
    limits = run_limits(settings)
    expect = dataclasses.replace(expect, max_bytes=limits.output_bytes)
    spec = RunSpec(
        run_id=run_id,
        image=image,
        input_path=input_path,
        work_dir=work_dir,
        limits=limits,
        labels=labels,
        # Refusals in a fixed vocabulary; checked in a memory-limited child, like an upload
        # (libhdf5 inflates whatever a chunk holds).
        validate_output=lambda p: validate_output(p, expect, validate=validate_result_isolated),
    )
    if script_files is not None:
        spec.command = script_command()
        spec.read_only_mounts = {str(script_files): MOUNT_POINT}
        spec.environment = dict(SCRIPT_ENVIRONMENT)
    return spec


def publish_image(submission: Submission) -> str | None:
    """Push ``submission``'s image to the server's registry (``EDX_IMAGE_REGISTRY``) and record
    the pinned reference; None without a registry. Idempotent: the tag is the image id."""
    registry = get_settings().image_registry
    if not registry or not submission.image_digest:
        return None
    if not submission.image_ref:
        submission.image_ref = push_image(submission.image_digest, registry=registry)
    return submission.image_ref
