"""Fixtures for the sandbox tests: images built on demand, a small measurement, a run helper."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

import docker
from harness.formats import ResultExpectation, write_measurement
from harness.sandbox import RunLimits, RunSpec, run_container
from harness.scenes import build_tier

REPO = Path(__file__).resolve().parents[3]
BUSYBOX = "edx-arena-test/busybox:latest"
BUSYBOX_USER = "edx-arena-test/busybox-user:latest"
RUNNER = "edx-arena/runner:latest"
SMALL_LIMITS = dict(memory_bytes=64 * 2**20, wall_seconds=10, pids=64, output_bytes=8 * 2**20, log_bytes=64 * 2**10)


def _has_image(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.fixture(scope="session")
def client():
    # No skip: CI provides a daemon, and a missing one must fail the suite loudly.
    c = docker.from_env(timeout=120)
    c.ping()
    return c


@pytest.fixture(scope="session")
def images(client):
    if not _has_image(client, RUNNER):
        subprocess.run(["bash", "scripts/build-images.sh"], cwd=REPO, check=True)
    elif not (_has_image(client, BUSYBOX) and _has_image(client, BUSYBOX_USER)):
        subprocess.run(["bash", "scripts/build-images.sh", "--test-only"], cwd=REPO, check=True)
    return client


@pytest.fixture(scope="session")
def hidden_dataset():
    return build_tier("hidden", seed=1, preset="small")


@pytest.fixture(scope="session")
def measurement(hidden_dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "measurement.h5"
    write_measurement(hidden_dataset, path, include_truth=False)
    os.chmod(path, 0o644)
    os.chmod(path.parent, 0o755)
    return path


@pytest.fixture(scope="session")
def expect(hidden_dataset) -> ResultExpectation:
    return ResultExpectation.for_dataset(hidden_dataset, max_bytes=8 << 20)


@pytest.fixture
def work_dir(tmp_path):
    from harness.sandbox import remove_tree

    d = tmp_path / "work"
    d.mkdir()
    yield d
    # A hostile run may leave a tree pytest's own clean-up cannot remove (it recurses).
    assert remove_tree(d)


@pytest.fixture
def run(images, measurement, work_dir):
    """``run(cmd, image=..., validate_output=..., **limit_overrides)`` → RunResult.

    Checks what every run must satisfy: it ended within its wall time (plus the start-up and
    clean-up margin), and no container labelled with its run id is left behind.
    """
    client = images

    def _run(cmd, *, image=BUSYBOX, validate_output=None, work=None, input_path=None, **limit_overrides):
        run_id = f"test-{uuid.uuid4().hex[:12]}"
        limits = RunLimits(**{**SMALL_LIMITS, **limit_overrides})
        spec = RunSpec(
            run_id=run_id,
            image=image,
            input_path=input_path or measurement,
            work_dir=work or work_dir / run_id,
            limits=limits,
            command=[cmd] if isinstance(cmd, str) else cmd,
            validate_output=validate_output,
        )
        result = run_container(spec, client=client)
        assert result.message
        assert 0 <= result.runtime_seconds <= limits.wall_seconds + 10, result
        left = client.containers.list(all=True, filters={"label": f"edx-arena.run={run_id}"})
        assert not left, f"container(s) of run {run_id} left behind: {left}"
        _run.last_spec = spec
        return result

    return _run


@pytest.fixture(scope="session")
def derived_image(images):
    """``derived_image(tag, *lines)``: build ``FROM edx-arena-test/busybox`` plus ``lines`` (offline,
    cached by the daemon) and return the tag; hostile images that need more than a command."""
    import io

    def _build(tag: str, *lines: str) -> str:
        dockerfile = "\n".join([f"FROM {BUSYBOX}", *lines]) + "\n"
        images.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="none", rm=True)
        return tag

    return _build
