"""harness/sandbox/distribution.py against the real daemon and a real registry on loopback:
a push is pinned by manifest digest, a pull by that digest is checked against the accepted id
(a swapped image is refused and removed), an unpinned reference is refused, and the cache of
pulled images stays within its bound.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

import docker
from harness.errors import PlatformError
from harness.sandbox.distribution import ImageCache, pull_pinned, push_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert shutil.which("docker-registry"), "docker-registry is not installed; run scripts/setup.sh"
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.1)
    yield f"127.0.0.1:{port}/remote-test"
    proc.terminate()
    proc.wait(timeout=10)


def _image(derived_image) -> str:
    """A fresh tiny image (a unique label), its id."""
    tag = derived_image(f"edx-arena-test/remote-{uuid.uuid4().hex[:8]}:1", f"LABEL n={uuid.uuid4().hex}")
    return docker.from_env().images.get(tag).id


def _drop(client, image_id: str) -> None:
    client.images.remove(image_id, force=True)


def test_push_pins_by_digest_and_a_pull_is_checked(registry, derived_image):
    client = docker.from_env(timeout=120)
    a, b = _image(derived_image), _image(derived_image)
    ref_a, ref_b = push_image(a, registry=registry), push_image(b, registry=registry)
    assert ref_a.startswith(f"{registry}/edx-arena-sub@sha256:") and ref_a != ref_b
    assert push_image(a, registry=registry) == ref_a  # the same image: the same digest
    for image_id in (a, b):
        _drop(client, image_id)

    assert pull_pinned(ref_a, image_id=a) == a and client.images.get(a).id == a
    with pytest.raises(PlatformError, match="not pinned by digest"):
        pull_pinned(f"{registry}/edx-arena-sub:latest", image_id=a)
    with pytest.raises(PlatformError, match="refused"):  # the registry serves b where a was accepted
        pull_pinned(ref_b, image_id="sha256:" + "0" * 64)
    with pytest.raises(docker.errors.ImageNotFound):  # and the swapped image was not kept
        client.images.get(ref_b)
    _drop(client, a)


def test_the_cache_keeps_its_bound(registry, derived_image, tmp_path):
    client = docker.from_env(timeout=120)
    ids = [_image(derived_image) for _ in range(3)]
    refs = [push_image(i, registry=registry) for i in ids]
    for image_id in ids:
        _drop(client, image_id)
    cache = ImageCache(tmp_path / "images.json", size=2)
    for ref, image_id in zip(refs, ids, strict=True):
        assert cache.use(ref, image_id=image_id) == image_id
        time.sleep(0.01)
    with pytest.raises(docker.errors.ImageNotFound):  # the least recently used one is gone
        client.images.get(ids[0])
    assert {client.images.get(i).id for i in ids[1:]} == set(ids[1:])
    assert len(ImageCache(tmp_path / "images.json", size=2)._load()) == 2  # the bound survives a restart
    for image_id in ids[1:]:
        _drop(client, image_id)
