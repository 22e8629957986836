"""Every sandbox limit of design §5 is an organizer setting (EDX_SANDBOX_*) that reaches the run."""

from __future__ import annotations

import pytest

from core.settings import get_settings
from harness.sandbox import RunLimits
from services.submissions.run import limits_from_settings


@pytest.fixture
def settings_env(monkeypatch):
    def apply(**env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return limits_from_settings()

    monkeypatch.setenv("EDX_ENVIRONMENT", "development")
    yield apply
    get_settings.cache_clear()


def test_defaults_are_the_design_defaults(settings_env):
    limits = settings_env()
    assert limits == RunLimits(
        cpus=1.0,
        memory_bytes=2 * 2**30,
        pids=256,
        wall_seconds=1800,
        output_bytes=512 * 2**20,
        log_bytes=2**20,
        runtime=None,
        allow_image_user=False,
    )
    assert limits.network_disabled and limits.read_only_root and limits.user == "65534:65534"


def test_every_limit_is_a_setting(settings_env):
    limits = settings_env(
        EDX_SANDBOX_CPUS="2",
        EDX_SANDBOX_MEMORY_BYTES=str(2**30),
        EDX_SANDBOX_PIDS="64",
        EDX_SANDBOX_WALL_SECONDS="60",
        EDX_SANDBOX_OUTPUT_BYTES=str(2**20),
        EDX_SANDBOX_LOG_BYTES="4096",
        EDX_SANDBOX_RUNTIME="runsc",
        EDX_SANDBOX_ALLOW_IMAGE_USER="true",
    )
    assert (limits.cpus, limits.memory_bytes, limits.pids, limits.wall_seconds) == (2.0, 2**30, 64, 60)
    assert (limits.output_bytes, limits.log_bytes, limits.runtime, limits.allow_image_user) == (
        2**20,
        4096,
        "runsc",
        True,
    )
