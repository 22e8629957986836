"""Server-side commands with a bad or missing setting: one line ``error: …`` naming the setting
and the fix, exit code 2, never a traceback (issue 14). Each case runs the real command in a
new process, as an organizer would type it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMANDS = {
    "serve": ["serve", "--port", "1"],
    "worker": ["worker"],
    "create-participant": ["admin", "create-participant", "alice"],
    "seed-tier": ["admin", "seed-tier", "--tier", "public", "--seed", "1", "--size", "small"],
    "rescore": ["admin", "rescore", "--outdated"],
}

#: (environment, the variable the message must name, a phrase of the fix)
BAD = {
    "no organizer token": ({}, "EDX_ORGANIZER_TOKEN", "set a secret"),
    "not a number": ({"EDX_SANDBOX_CPUS": "two"}, "EDX_SANDBOX_CPUS", "valid number"),
    "unknown database": ({"EDX_DATABASE_URL": "mysql://db/edx"}, "EDX_DATABASE_URL", "postgresql://"),
    "database down": (
        {"EDX_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/edx"},
        "EDX_DATABASE_URL",
        "database server is running",
    ),
    "unknown broker": ({"EDX_BROKER_URL": "amqp://guest@localhost//"}, "EDX_BROKER_URL", "redis://"),
    "unwritable data dir": ({"EDX_DATA_DIR": "/proc/edx-arena"}, "EDX_DATA_DIR", "writable"),
    "bad choice": ({"EDX_LEADERBOARD_POLICY": "median"}, "EDX_LEADERBOARD_POLICY", "'best' or 'latest'"),
}


def _run(args: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDX_")}
    clean |= {"EDX_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "60"}
    if "EDX_ORGANIZER_TOKEN" not in env and env:  # only the first case leaves the token out
        clean["EDX_ORGANIZER_TOKEN"] = "a-real-secret"
    clean |= env
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


# Every bad setting against serve, and every server-side command against two of them: the check
# is one function that each command calls first.
CASES = [("serve", case) for case in BAD] + [
    (command, case) for command in COMMANDS if command != "serve" for case in ("no organizer token", "database down")
]


@pytest.mark.parametrize(("command", "case"), CASES)
def test_bad_setting_is_one_line_and_exit_2(command, case, tmp_path) -> None:
    env, variable, fix = BAD[case]
    p = _run(COMMANDS[command], env, tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr  # one line, whatever the terminal width
    assert lines[0].startswith("error: ") and variable in lines[0] and fix in lines[0], lines[0]
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_a_good_setting_passes_the_check(tmp_path) -> None:
    # The check is not a blanket refusal: with valid settings the admin command does its work.
    p = _run(COMMANDS["create-participant"], {"EDX_SANDBOX_CPUS": "2"}, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()  # the token


def test_a_compute_worker_needs_its_server_and_token(tmp_path) -> None:
    p = _run(["worker", "--role", "compute"], {"EDX_ORGANIZER_TOKEN": "a-real-secret"}, tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "EDX_API_URL" in lines[0] and "create-worker" in lines[0], lines[0]
