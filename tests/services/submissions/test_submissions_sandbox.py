"""services/submissions/sandbox.py: the one place a run's sandbox is built from the settings. The
worker and ``edx-arena run`` get the same limits from the same EDX_SANDBOX_* names; a participant's
machine needs none of the server's settings to read them; a result is held to the output cap."""

from __future__ import annotations

import dataclasses
import os

import pytest

from core.settings import SettingsError, get_settings, load_sandbox_settings, load_settings
from harness.errors import FormatError
from harness.formats import ResultExpectation, write_result
from harness.sandbox import RunLimits
from harness.scenes import build_tier
from harness.solvers import solve_dataset
from services.submissions.run import limits_from_settings
from services.submissions.sandbox import SCRIPT_ENVIRONMENT, run_limits, run_spec

SANDBOX_ENV = {
    "EDX_SANDBOX_CPUS": "2",
    "EDX_SANDBOX_MEMORY_BYTES": str(2**30),
    "EDX_SANDBOX_PIDS": "64",
    "EDX_SANDBOX_WALL_SECONDS": "60",
    "EDX_SANDBOX_OUTPUT_BYTES": str(2**20),
    "EDX_SANDBOX_LOG_BYTES": "4096",
    "EDX_SANDBOX_RUNTIME": "runsc",
    "EDX_SANDBOX_ALLOW_IMAGE_USER": "true",
}


@pytest.fixture
def env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("EDX_")]:
        monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_the_worker_and_a_local_run_get_the_same_limits(env):
    for key, value in SANDBOX_ENV.items():
        env.setenv(key, value)
    env.setenv("EDX_ENVIRONMENT", "development")
    local = run_limits(load_sandbox_settings())
    assert limits_from_settings() == local
    assert dataclasses.astuple(local) != dataclasses.astuple(RunLimits())  # every setting reached it
    assert (local.cpus, local.memory_bytes, local.pids, local.wall_seconds) == (2.0, 2**30, 64, 60)
    assert (local.output_bytes, local.log_bytes, local.runtime, local.allow_image_user) == (2**20, 4096, "runsc", True)


def test_a_participants_machine_needs_no_server_setting(env):
    # Production, no organizer token: the server refuses to start; a local run reads its limits.
    with pytest.raises(SettingsError, match="EDX_ORGANIZER_TOKEN"):
        load_settings()
    assert run_limits(load_sandbox_settings()) == RunLimits()
    env.setenv("EDX_SANDBOX_MEMORY_BYTES", "lots")
    with pytest.raises(SettingsError, match="EDX_SANDBOX_MEMORY_BYTES"):
        load_sandbox_settings()


def test_a_result_is_held_to_the_output_cap_and_a_script_runs_from_submission(env, tmp_path):
    dataset = build_tier("public", seed=3, preset="small")
    result = tmp_path / "result.h5"
    write_result(solve_dataset(dataset.without_truth(), solver="nnls"), result)
    size = result.stat().st_size
    expect = ResultExpectation.for_dataset(dataset, max_bytes=10 * size)  # the caller's cap is not the one used

    def spec_under(cap: int, **kwargs):
        env.setenv("EDX_SANDBOX_OUTPUT_BYTES", str(cap))
        common = dict(run_id="r", image="i", input_path=tmp_path, work_dir=tmp_path, expect=expect, labels={})
        return run_spec(**common, settings=load_sandbox_settings(), **kwargs)

    spec_under(size).validate_output(result)  # at the cap: valid
    with pytest.raises(FormatError):
        spec_under(size - 1).validate_output(result)

    files = tmp_path / "submission"
    script = spec_under(size, script_files=files)
    assert script.command == ["python3", "-u", "/submission/main.py"]
    assert script.read_only_mounts == {str(files): "/submission"} and script.environment == SCRIPT_ENVIRONMENT
    assert spec_under(size).command is None and spec_under(size).read_only_mounts == {}
