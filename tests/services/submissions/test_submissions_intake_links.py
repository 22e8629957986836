"""Image links (services/submissions/intake.py, harness/sandbox/images.py pull_image) against a
real Docker Distribution registry on loopback and the real daemon: pulled only from the
allow-list, pinned by digest, size-capped and time-limited; plain names are looked up, never
pulled.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from arena_testing import ORG, add_participant
from database_testing import reset_caches
from sqlalchemy import func, select
from worker_testing import error, wait_finished

import docker
from db.models import ImageOwner, Participant, Submission
from db.session import new_session
from harness.errors import ImageError
from harness.sandbox import pull_image
from harness.scoring import SCORER_VERSION
from services.datasets import active_dataset
from services.submissions import intake
from tests.harness.sandbox.hostile_archives import config_json, sparse_layer, zeros_layer

pytestmark = pytest.mark.docker


BASE = "edx-arena-test/busybox-user:latest"


#: bcrypt of a password nobody sends: the private registry only ever sees anonymous pulls.
HTPASSWD = "reader:$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_registry(root: Path, *, private: bool = False):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed; run scripts/setup.sh (Debian package docker-registry)")
    port = _free_port()
    root.mkdir(parents=True, exist_ok=True)
    auth = ""
    if private:
        (root / "htpasswd").write_text(HTPASSWD)
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:  # 401 from the private one: it is up
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
    return proc, f"127.0.0.1:{port}", log


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    proc, host, log = _start_registry(tmp_path_factory.mktemp("registry"))
    yield host
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory):
    proc, host, log = _start_registry(tmp_path_factory.mktemp("private-registry"), private=True)
    yield host
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def dk():
    client = docker.from_env(timeout=120)
    client.images.get(BASE)  # built by scripts/build-images.sh --test-only
    return client


def _push(dk, image: str, repo: str, tag: str) -> str:
    """Push ``image`` as ``repo:tag``, then drop the local tag so a submission really pulls."""
    dk.images.get(image).tag(repo, tag)
    for event in dk.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in event, event
    dk.images.remove(f"{repo}:{tag}")
    return f"{repo}:{tag}"


def _build(dk, files: dict[str, bytes], dockerfile: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    tag = f"edx-arena-test/linked-{uuid.uuid4().hex[:8]}:latest"
    _image, _ = dk.images.build(fileobj=buf, custom_context=True, tag=tag, network_mode="none", rm=True)
    return tag


def _forget(dk, *refs: str) -> None:
    for ref in refs:
        try:
            dk.images.remove(ref, force=True)
        except docker.errors.APIError:
            pass


def _count() -> int:
    with new_session() as s:
        return s.scalar(select(func.count()).select_from(Submission))


def _hidden_result(tmp_path: Path) -> bytes:
    """A result for the active Hidden dataset, made on the test's side: the linked image only
    has to deliver it (this test is about transport, not solving)."""
    from db.models import Dataset
    from harness.formats import read_measurement, write_result
    from harness.solvers import solve_dataset

    with new_session() as s:
        view = s.scalar(select(Dataset.view_path).where(Dataset.tier == "hidden", Dataset.active.is_(True)))
    out = tmp_path / "result.h5"
    write_result(solve_dataset(read_measurement(view), solver="nnls"), out)
    return out.read_bytes()


@pytest.fixture
def allow(stack, registry, monkeypatch):
    monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", f"registry.example:5000, {registry}/team")
    reset_caches()
    return registry


@pytest.fixture
def hidden(client):
    r = client.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 5, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    return client


@pytest.fixture(scope="module")
def pushed(dk, registry):
    link = _push(dk, BASE, f"{registry}/team/busybox", "1")
    yield link
    _forget(dk, link)


def _link(client, headers, image: str):
    return client.post("/api/v1/submissions/container", json={"image": image, "method": "m"}, headers=headers)


@pytest.mark.slow
def test_linked_image_is_pulled_pinned_and_scored(allow, api, dk, tmp_path):
    registry = allow
    alice = add_participant(api, "alice")
    built = _build(
        dk,
        {"result.h5": _hidden_result(tmp_path)},
        f'FROM {BASE}\nCOPY result.h5 /result.h5\nCMD ["cp /result.h5 /output/result.h5 && echo delivered"]\n',
    )
    link = _push(dk, built, f"{registry}/team/solver", "1.2")
    try:
        r = api.post(
            "/api/v1/submissions/container",
            headers=alice,
            json={
                "image": link,
                "method": "linked solver",
                "source": "https://example.org/solver",
                "description": "nnls, shipped",
            },
        )
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        s = wait_finished(api, alice, {"link": sid})["link"]
        assert s["status"] == "scored" and s["outcome"] == "succeeded", s
        built_id = dk.images.get(built).id
        assert s["image_digest"] == built_id  # the run pinned exactly the pushed image
        manifest = dk.images.get_registry_data(link).id
        with new_session() as session:
            assert session.get(Submission, sid).image == f"{link}@{manifest}"
        tier_row = next(x for x in s["scores"] if x["scene_id"] == "")
        assert 0 < tier_row["score"] < 1

        entry = api.get("/api/v1/leaderboard", params={"tier": "hidden"}).json()["data"][0]
        assert (entry["participant"], entry["method"], entry["source"], entry["description"]) == (
            "alice",
            "linked solver",
            "https://example.org/solver",
            "nnls, shipped",
        )
        assert entry["certified"] is True and entry["rank"] == 1 and entry["submission_id"] == sid
        prov = api.get(f"/api/v1/submissions/{sid}/provenance", headers=alice).json()
        assert prov["image"] == f"{link}@{manifest}" and prov["image_digest"] == built_id
        assert (
            prov["scores"][0]["submission_hash"] == built_id and prov["scores"][0]["scoring_version"] == SCORER_VERSION
        )
        # The public sees a certified server run, not which image (issue 16.2).
        public = api.get(f"/api/v1/submissions/{sid}/provenance").json()
        assert public["server_run"] and public["certified"] and public["image"] is public["image_digest"] is None
        with new_session() as session:  # the link made the image alice's
            owners = session.execute(select(ImageOwner.participant_id, ImageOwner.how)).all()
            assert [(p.name, how) for pid, how in owners if (p := session.get(Participant, pid))] == [("alice", "link")]
    finally:
        _forget(dk, link, f"{registry}/team/solver@{dk.images.get_registry_data(link).id}", built)


def test_link_outside_the_allow_list_is_refused(hidden, monkeypatch, registry, pushed):
    alice = add_participant(hidden, "alice")
    error(
        _link(hidden, alice, pushed),
        422,
        "image_invalid",
        f"the registry '{registry}' is not on this server's allow-list (allowed: none are configured)",
    )
    monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", f"registry.example:5000,{registry}/team")
    reset_caches()
    # the path prefix counts: /team/ is allowed, /other/ is not
    error(
        _link(hidden, alice, f"{registry}/other/solver:1"),
        422,
        "image_invalid",
        f"the registry '{registry}' is not on this server's allow-list (allowed: registry.example:5000, {registry}/team)",
    )
    error(
        _link(hidden, alice, "Not A Reference!"),
        422,
        "image_invalid",
        "'Not A Reference!' is not a valid image reference (expected [registry/]name[:tag][@sha256:digest])",
    )
    assert _count() == 0


def test_missing_private_and_oversized_images_are_refused(hidden, monkeypatch, registry, private_registry, pushed, dk):
    alice = add_participant(hidden, "alice")
    monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", f"{registry},{private_registry}")
    reset_caches()
    body = error(_link(hidden, alice, f"{registry}/team/busybox:no-such-tag"), 422, "image_invalid")
    assert body["message"].startswith(
        f"cannot pull '{registry}/team/busybox:no-such-tag': the registry has no such image or tag ("
    )
    body = error(_link(hidden, alice, f"{registry}/nobody/nothing:1"), 422, "image_invalid")
    assert "the registry has no such image or tag" in body["message"]
    body = error(_link(hidden, alice, f"{private_registry}/team/secret:1"), 422, "image_invalid")
    assert body["message"].startswith(
        f"cannot pull '{private_registry}/team/secret:1': the registry refused access (a private image?)"
    ), body

    monkeypatch.setenv("EDX_MAX_IMAGE_BYTES", "100000")
    reset_caches()
    # refused from the registry's manifest, before the daemon pulls anything
    error(
        _link(hidden, alice, pushed),
        422,
        "image_invalid",
        f"{pushed!r} is over the 100000 byte image cap (its layers alone are larger); the pull was stopped",
    )
    manifest = dk.images.get_registry_data(pushed).id
    with pytest.raises(docker.errors.ImageNotFound):  # the refused pull is not kept
        dk.images.get(f"{pushed.rsplit(':', 1)[0]}@{manifest}")
    assert _count() == 0


def test_registry_that_never_answers_times_out(hidden, monkeypatch):
    """A listener that accepts connections and then says nothing: the pull time-out ends it."""
    alice = add_participant(hidden, "alice")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", host)
        monkeypatch.setenv("EDX_PULL_TIMEOUT_SECONDS", "3")
        reset_caches()
        started = time.monotonic()
        body = error(_link(hidden, alice, f"{host}/team/slow:1"), 422, "image_invalid")
        assert time.monotonic() - started < 15
        assert "(the pull time-out)" in body["message"] and "3 s" in body["message"], body
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        silent.close()
    assert _count() == 0


def test_plain_local_names_are_looked_up_not_pulled(hidden, monkeypatch, registry):
    alice = add_participant(hidden, "alice", images=(BASE,))
    monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", registry)
    reset_caches()
    r = _link(hidden, alice, BASE)
    assert r.status_code == 202, r.text
    s = hidden.get(f"/api/v1/submissions/{r.json()['id']}", headers=alice).json()
    assert s["image_digest"] == docker.from_env().images.get(BASE).id
    error(
        _link(hidden, alice, "team/not-here:1"),
        404,
        "not_found",
        "no image 'team/not-here:1' on the server; upload it as a docker save archive, "
        "or link it from an allowed registry (registry.example:5000/team/solver:1.2)",
    )
    assert _count() == 1


def test_link_whose_layers_are_not_here_is_downloaded_or_stopped_at_the_cap(hidden, monkeypatch, registry, dk):
    """The other tests' images share their layers with local ones; this one has a fresh 3 MB layer
    that only the registry holds, so the pull really downloads it (and the cap can stop it)."""
    import os

    alice = add_participant(hidden, "alice")
    built = _build(dk, {"blob.bin": os.urandom(3 * 2**20)}, f"FROM {BASE}\nCOPY blob.bin /blob.bin\n")
    built_id = dk.images.get(built).id
    link = _push(dk, built, f"{registry}/team/fresh", "1")
    manifest = dk.images.get_registry_data(link).id
    pinned = f"{registry}/team/fresh@{manifest}"
    _forget(dk, built)  # now no local copy of the fresh layer
    with pytest.raises(docker.errors.ImageNotFound):
        dk.images.get(built_id)
    try:
        monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", registry)
        monkeypatch.setenv("EDX_MAX_IMAGE_BYTES", str(5 * 2**20 // 2))
        reset_caches()
        body = error(_link(hidden, alice, link), 422, "image_invalid")
        # stopped early, from the layer sizes the registry announced
        assert (
            body["message"]
            == f"{link!r} is over the {5 * 2**20 // 2} byte image cap (its layers alone are larger); the pull was stopped"
        )
        with pytest.raises(docker.errors.ImageNotFound):
            dk.images.get(pinned)
        assert _count() == 0

        monkeypatch.setenv("EDX_MAX_IMAGE_BYTES", str(64 * 2**20))
        reset_caches()
        r = _link(hidden, alice, link)
        assert r.status_code == 202, r.text
        s = hidden.get(f"/api/v1/submissions/{r.json()['id']}", headers=alice).json()
        assert s["image_digest"] == built_id  # the same content, now downloaded
        assert dk.images.get(pinned).id == built_id
    finally:
        _forget(dk, pinned, built_id)


# ---- Issue 15: a link is checked at the registry before the daemon pulls it ---------------------

_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
_INDEX = "application/vnd.docker.distribution.manifest.list.v2+json"
_GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _put_blob(registry: str, repo: str, data: bytes) -> str:
    import requests

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"http://{registry}/v2/{repo}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    location = location if location.startswith("http") else f"http://{registry}{location}"
    r = requests.put(location, params={"digest": digest}, data=data, timeout=60)
    assert r.status_code == 201, r.text
    return digest


def _put_manifest(registry: str, repo: str, tag: str, manifest: dict) -> str:
    import requests

    body = json.dumps(manifest).encode()
    r = requests.put(
        f"http://{registry}/v2/{repo}/manifests/{tag}",
        data=body,
        headers={"Content-Type": manifest["mediaType"]},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _push_layers(registry: str, repo: str, tag: str, layers: list[tuple[bytes, str]], *, arch: str = "amd64"):
    """Push an image made of ``(gzip blob, diff id)`` layers straight to the registry (no
    daemon involved); returns ``(link, manifest digest, image id)``."""
    config = json.loads(config_json([d for _, d in layers]))
    config["architecture"] = arch
    config = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": _SCHEMA2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": _put_blob(registry, repo, config),
        },
        "layers": [
            {"mediaType": _GZIP_LAYER, "size": len(b), "digest": _put_blob(registry, repo, b)} for b, _ in layers
        ],
    }
    digest = _put_manifest(registry, repo, tag, manifest)
    return f"{registry}/{repo}:{tag}", digest, "sha256:" + hashlib.sha256(config).hexdigest()


def _pulled(dk, since: float, repo: str) -> list[dict]:
    """The daemon's ``pull`` events for ``repo`` since ``since``: a pull that completed."""
    events = dk.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True, filters={"type": "image"})
    return [e for e in events if e.get("status") == "pull" and repo in e.get("id", "")]


def _tiny_layer(i: int) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"f{i}")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    plain = buf.getvalue()
    return gzip.compress(plain), "sha256:" + hashlib.sha256(plain).hexdigest()


def test_a_link_whose_layer_unpacks_past_the_cap_is_never_pulled(registry, dk):
    """A 64 kB gzip layer that unpacks to 64 MiB: the cap stops it at the registry, so the
    daemon never downloads or unpacks it (today's check ran only after the daemon had)."""
    repo = f"team/bomb-{uuid.uuid4().hex[:6]}"
    link, digest, image_id = _push_layers(registry, repo, "1", [zeros_layer(64 * 2**20)])
    started = time.time()
    try:
        with pytest.raises(ImageError) as caught:
            pull_image(link, allowlist=[registry], max_bytes=16 * 2**20, timeout=60)
        assert caught.value.message == (
            f"{link!r} unpacks to more than the 16777216 byte image cap; the pull was stopped before the daemon unpacked it"
        )
        assert not _pulled(dk, started, repo)
    finally:
        _forget(dk, f"{registry}/{repo}@{digest}", image_id)


def test_a_link_with_too_many_layers_is_refused_before_pulling(registry, dk):
    repo = f"team/deep-{uuid.uuid4().hex[:6]}"
    link, digest, image_id = _push_layers(registry, repo, "1", [_tiny_layer(i) for i in range(130)])
    started = time.time()
    try:
        with pytest.raises(ImageError) as caught:
            pull_image(link, allowlist=[registry], max_bytes=2**30, timeout=120)
        assert caught.value.message == f"cannot pull {link!r}: the image has 130 layers; the limit is 127 (squash some)"
        assert not _pulled(dk, started, repo)
    finally:
        _forget(dk, f"{registry}/{repo}@{digest}", image_id)


def test_a_link_with_a_sparse_file_is_refused_before_pulling(registry, dk):
    """9 kB of layer that the daemon's tar reader would write out as a 64 MiB file."""
    repo = f"team/sparse-{uuid.uuid4().hex[:6]}"
    plain = sparse_layer(64 * 2**20)
    link, digest, image_id = _push_layers(
        registry, repo, "1", [(gzip.compress(plain), "sha256:" + hashlib.sha256(plain).hexdigest())]
    )
    started = time.time()
    try:
        with pytest.raises(ImageError) as caught:
            pull_image(link, allowlist=[registry], max_bytes=2**30, timeout=60)
        assert caught.value.message.startswith(
            f"cannot pull {link!r}: layer 1 of 1 is refused: the tar holds a sparse file (GNU.sparse PAX records)"
        ), caught.value.message
        assert not _pulled(dk, started, repo)
    finally:
        _forget(dk, f"{registry}/{repo}@{digest}", image_id)


def test_a_multi_platform_link_is_pinned_to_its_amd64_manifest(registry, dk):
    """The index is resolved here and the daemon pulls the very manifest that was checked."""
    repo = f"team/multi-{uuid.uuid4().hex[:6]}"
    _, amd64, image_id = _push_layers(registry, repo, "amd64", [_tiny_layer(1)])
    _, arm64, _ = _push_layers(registry, repo, "arm64", [_tiny_layer(2)], arch="arm64")
    sizes = {}
    import requests

    for tag in ("amd64", "arm64"):
        r = requests.get(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": _SCHEMA2}, timeout=30)
        sizes[tag] = len(r.content)
    index = {
        "schemaVersion": 2,
        "mediaType": _INDEX,
        "manifests": [
            {
                "mediaType": _SCHEMA2,
                "size": sizes["arm64"],
                "digest": arm64,
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": _SCHEMA2,
                "size": sizes["amd64"],
                "digest": amd64,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
    _put_manifest(registry, repo, "1", index)
    link = f"{registry}/{repo}:1"
    try:
        info, pinned = pull_image(link, allowlist=[registry], max_bytes=2**30, timeout=60)
        assert pinned == f"{link}@{amd64}"
        assert info.id == image_id
    finally:
        _forget(dk, f"{registry}/{repo}@{amd64}", image_id)


def test_a_pull_that_loses_the_quota_race_leaves_no_image(hidden, monkeypatch, registry, dk):
    """Issue 15: the quota is checked again under the participant's lock after the pull; a link
    that loses that race (another submission took the day's last slot while it pulled) is
    refused and the image it pulled is removed again. Before, it stayed on the daemon."""
    import os

    alice = add_participant(hidden, "alice")
    built = _build(dk, {"blob.bin": os.urandom(4096)}, f"FROM {BASE}\nCOPY blob.bin /blob.bin\n")
    built_id = dk.images.get(built).id
    link = _push(dk, built, f"{registry}/team/race", "1")
    _forget(dk, built)
    with pytest.raises(docker.errors.ImageNotFound):
        dk.images.get(built_id)
    pull = intake.pull_image

    def pull_then_lose_the_race(ref, **kwargs):
        info, pinned = pull(ref, **kwargs)
        assert dk.images.get(info.id).id == built_id  # really pulled
        with new_session() as s:
            who = s.scalar(select(Participant).where(Participant.name == "alice"))
            s.add(Submission(participant=who, dataset=active_dataset(s, "hidden"), tier="hidden", kind="container"))
            s.commit()
        return info, pinned

    try:
        monkeypatch.setenv("EDX_REGISTRY_ALLOWLIST", registry)
        monkeypatch.setenv("EDX_QUOTA_HIDDEN", "1")
        reset_caches()
        monkeypatch.setattr(intake, "pull_image", pull_then_lose_the_race)
        body = error(_link(hidden, alice, link), 429, "quota_exceeded")
        assert body["message"].startswith("daily quota reached: 1 of 1 hidden submissions today")
        with pytest.raises(docker.errors.ImageNotFound):
            dk.images.get(built_id)
        assert _count() == 1  # the race's winner only
    finally:
        _forget(dk, built_id)
