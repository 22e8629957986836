"""services/access.py and the sandbox's disclosure rules end to end (issue 16.3): hostile images
through the real API and worker; what a failed run can carry to its owner stays within the
measured exfiltration budget of docs/sandbox.md.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
import uuid

import h5py
import numpy as np
import pytest
from arena_testing import ORG, grant_image, sign_in
from worker_testing import wait_finished

import docker
from core.settings import get_settings
from db.models import Outcome
from db.session import new_session
from harness.dataset import Result, SceneResult
from harness.formats import output_error_messages, write_result
from harness.forward import Spec
from harness.sandbox.disclosure import EXCERPT_BYTES, MEMORY_STEP_BYTES, RUNTIME_STEP_SECONDS
from services.datasets import active_dataset, result_expectation

pytestmark = [pytest.mark.docker, pytest.mark.slow]


BUSYBOX = "edx-arena-test/busybox:latest"


#: 1,000 characters of "anything" a container wants its owner to read.
MARK = ("hiddenDataQ" * 91)[:1000]


PREFIX = "/output/result.h5 is not a valid result: "


#: Message forms other than an invalid result's, each counted once (their numbers are counted as
#: their own channels: the exit code) — runner: succeeded, timeout, oom, nonzero_exit,
#: missing_output, two not-a-file forms, six output_too_large forms (bytes, files, depth; stopped
#: or not), two unreadable-/output forms; platform errors (one per
#: exception class of the Docker SDK and requests, with or without the attempts suffix); worker
#: and reaper retries. 64 bounds them with room to spare.
OTHER_MESSAGE_FORMS = 64


#: How much longer than the wall time a run can take from claim to outcome (kill, clean-up,
#: validation): the window the container can move its end time in.
END_SLACK_SECONDS = 60


def _build(tag: str, files: dict[str, bytes], command: str) -> str:
    buf = io.BytesIO()
    dockerfile = f"FROM {BUSYBOX}\nCOPY payload/ /payload/\nCMD {json.dumps([command])}\n".encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile, **{f"payload/{k}": v for k, v in files.items()}}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    docker.from_env().images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)
    return tag


def _hidden_expectation():
    with new_session() as s:
        return result_expectation(active_dataset(s, "hidden"), max_bytes=get_settings().sandbox_output_bytes)


def _hostile_result(path, expect, mutate) -> bytes:
    shape = expect.shape
    write_result(
        Result(
            scenes={
                s: SceneResult(x_hat=np.zeros(shape, np.float32), spec=Spec(0.0, 0.0, 0.0, 0.0))
                for s in expect.scene_ids
            }
        ),
        path,
    )
    with h5py.File(path, "a") as f:
        mutate(f, expect)
    return path.read_bytes()


def _compound_x_hat(f, expect):
    group = f["scenes"][expect.scene_ids[1]]
    del group["x_hat"]
    group.create_dataset("x_hat", shape=expect.shape, dtype=np.dtype([(MARK, "<f4")]))


def _unknown_scene(f, expect):
    f.copy(f["scenes"][expect.scene_ids[0]], f"scenes/{MARK}")


def _compound_spec_attribute(f, expect):
    f["scenes"][expect.scene_ids[2]]["spec"].attrs["peak_overlap"] = np.zeros((), dtype=np.dtype([(MARK, "<f8")]))
    f.attrs[MARK] = MARK  # an unknown attribute: never read, never named


HOSTILE_RESULTS = {"compound field name": _compound_x_hat, "unknown scene": _unknown_scene}


HOSTILE_RESULTS["spec attribute field name"] = _compound_spec_attribute


def _page(api, token: str, sid: str) -> str:
    r = sign_in(api, token, f"/submissions/{sid}")
    assert r.status_code == 303, r.text
    page = api.get(f"/submissions/{sid}")
    assert page.status_code == 200, page.text
    api.cookies.clear()
    return page.text


@pytest.fixture
def never_policy(monkeypatch):
    # Set before the API and the worker start (fixture order), so both read it.
    monkeypatch.setenv("EDX_HIDDEN_LOG_POLICY", "never")


def _letter_words(rng, n: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    return ["".join(rng.choice(letters, 47)) for _ in range(n)]


def _timestamp_resolution(values: list[str]) -> float:
    """The finest step the API's timestamps are written in (seconds)."""
    digits = max(len(m.group(1)) for v in values if (m := re.search(r"\.(\d+)", v)))
    return 10.0**-digits


def _participant_bytes(log: str) -> int:
    """Bytes of the run's own text in an owner's log view: all but the fixed header and markers."""
    lines = log.splitlines()
    assert lines[0].startswith("[Hidden-tier log: its owner sees only the error")
    fixed = ("[withheld: it looks like data]", "(the log is empty)")
    return sum(len(line.removesuffix(" […]").encode()) for line in lines[1:] if line not in fixed)


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_a_hostile_results_names_never_reach_its_owner(never_policy, api, tmp_path):
    expect = _hidden_expectation()
    r = api.post("/api/v1/admin/participants", json={"name": "mallory"}, headers=ORG)
    token, mallory_id = r.json()["token"], r.json()["id"]
    mallory = {"Authorization": f"Bearer {token}"}
    ids = {}
    for case, mutate in HOSTILE_RESULTS.items():
        data = _hostile_result(tmp_path / f"{len(ids)}.h5", expect, mutate)
        assert MARK.encode() in data
        tag = _build(
            f"edx-arena-test/hostile-result-{uuid.uuid4().hex[:8]}:1",
            {"result.h5": data},
            "cp /payload/result.h5 /output/result.h5",
        )
        grant_image(api, mallory_id, tag)  # a participant runs only their own images
        r = api.post("/api/v1/submissions/container", json={"image": tag, "method": case}, headers=mallory)
        assert r.status_code == 202, r.text
        ids[case] = r.json()["id"]
    states = wait_finished(api, mallory, ids)

    vocabulary = output_error_messages(expect)
    for case, sid in ids.items():
        mine = states[case]
        assert mine["status"] == "failed" and mine["outcome"] == "invalid_output", (case, mine)
        message = mine["error_message"]
        assert message.startswith(PREFIX) and message[len(PREFIX) :] in vocabulary, (case, message)
        assert "hiddenData" not in json.dumps(mine), case  # nowhere in the owner's JSON
        assert "not shown to its owner" in mine["log_tail"]  # the never policy
        assert "hiddenData" not in _page(api, token, sid)
        organizer = api.get(f"/api/v1/submissions/{sid}", headers=ORG).json()
        assert organizer["error_message"] == message  # one message for everyone
    assert states["compound field name"]["error_message"] == (
        f"{PREFIX}/scenes/{expect.scene_ids[1]}/x_hat has the wrong dtype; x_hat must be float32 or float64"
    )
    assert "is not one of the tier's" in states["unknown scene"]["error_message"]
    assert (
        f"/scenes/{expect.scene_ids[2]}/spec attribute 'peak_overlap'"
        in states["spec attribute field name"]["error_message"]
    )


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_every_channel_together_carries_under_256_bytes_per_failed_run(api, tmp_path):
    rng = np.random.default_rng(16)
    words = _letter_words(rng, 20_000)
    stuffing = "\n".join(".".join(words[i : i + 5]) for i in range(0, len(words), 5)) + "\n"
    payload = ".".join(_letter_words(rng, 30))  # 1,439 characters that pass the data-like rule
    traceback = (
        "Traceback (most recent call last):\n"
        f'  File "/{payload[:300]}.py", line 1, in {payload[300:400]}\n'
        f"    {payload[400:500]}\n"
        f"ValueError: {payload[500:]}\n"
    )
    command = (
        "cat /payload/stuffing.log /payload/traceback.log; "
        "head -c 12345 /dev/zero > /output/result.h5; mkdir /output/shape; "  # output shaping
        "head -c 40000000 /dev/zero | tail > /dev/null; "  # peak memory about 38 MiB
        "sleep 1.37; "  # runtime
        "exit 213"  # exit code
    )
    tag = _build(
        f"edx-arena-test/exfiltrate-{uuid.uuid4().hex[:8]}:1",
        {"stuffing.log": stuffing.encode(), "traceback.log": traceback.encode()},
        command,
    )
    r = api.post("/api/v1/admin/participants", json={"name": "eve"}, headers=ORG)
    token = r.json()["token"]
    eve = {"Authorization": f"Bearer {token}"}
    grant_image(api, r.json()["id"], tag)  # a participant runs only their own images
    r = api.post("/api/v1/submissions/container", json={"image": tag, "method": "exfiltrate"}, headers=eve)
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    mine = wait_finished(api, eve, {"run": sid})["run"]
    full = api.get(f"/api/v1/submissions/{sid}", headers=ORG).json()
    provenance = api.get(f"/api/v1/submissions/{sid}/provenance", headers=eve).json()
    page = _page(api, token, sid)
    assert api.get(f"/api/v1/submissions/{sid}/provenance").status_code == 404  # failed: not public

    # What the organizer sees: everything the container did, exactly.
    assert full["outcome"] == "nonzero_exit" and full["exit_code"] == 213
    assert payload[500:] in full["log_tail"] and words[-1] in full["log_tail"]
    assert full["runtime_seconds"] > 1.37 and full["peak_memory_bytes"] >= 40_000_000

    # What the owner sees, field by field.
    assert mine["outcome"] == "nonzero_exit" and mine["exit_code"] == 213 and mine["attempt"] == 1
    assert mine["error_message"] == "the container exited with code 213; the log shows the error"
    assert mine["runtime_seconds"] == math.ceil(full["runtime_seconds"] / RUNTIME_STEP_SECONDS) * RUNTIME_STEP_SECONDS
    assert mine["peak_memory_bytes"] == math.ceil(full["peak_memory_bytes"] / MEMORY_STEP_BYTES) * MEMORY_STEP_BYTES
    run = provenance["runs"][-1]
    assert (run["runtime_seconds"], run["peak_memory_bytes"]) == (mine["runtime_seconds"], mine["peak_memory_bytes"])
    log = mine["log_tail"]
    assert log.splitlines()[-1].startswith(f"ValueError: {payload[500:560]}")  # the error is still useful
    assert not any(w in log for w in words)  # not one word of the stuffing
    text_bytes = _participant_bytes(log)
    assert text_bytes <= EXCERPT_BYTES
    assert not any(w in page for w in words) and payload[500 + EXCERPT_BYTES :] not in page
    assert f"{mine['runtime_seconds']:.1f} s" in page and mine["error_message"] in page

    # The information those fields can carry (bits): text at 8 bits a byte, plus one byte for its
    # length and the excerpt's shape; each figure the log2 of the values it can take as shown.
    settings = get_settings()
    expect = _hidden_expectation()
    stamps = [mine["started_at"], mine["finished_at"], run["started_at"], run["ended_at"]]
    window = settings.sandbox_wall_seconds + END_SLACK_SECONDS
    assert float(mine["runtime_seconds"]).is_integer() and mine["peak_memory_bytes"] % MEMORY_STEP_BYTES == 0
    per_attempt = {
        "outcome": math.log2(len(Outcome) + 1),
        "exit code": math.log2(256 + 1),
        "runtime": math.log2(window / RUNTIME_STEP_SECONDS + 2),
        "peak memory": math.log2(settings.sandbox_memory_bytes / MEMORY_STEP_BYTES + 2),
        "timing (timestamps, polling)": math.log2(window / _timestamp_resolution(stamps)),
    }
    per_run = {
        "log": 8 * (text_bytes + 1),
        "message": math.log2(len(output_error_messages(expect)) + OTHER_MESSAGE_FORMS),
        "attempts, charged": math.log2(settings.max_attempts) + 1,
        **{name: settings.max_attempts * bits for name, bits in per_attempt.items()},
    }
    total_bytes = sum(per_run.values()) / 8
    print("\nexfiltration budget per failed run (bits):", {k: round(v, 1) for k, v in per_run.items()})
    print(f"total: {total_bytes:.1f} bytes")
    assert total_bytes <= 256, per_run
