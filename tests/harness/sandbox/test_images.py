"""Image intake: a docker-save archive is checked before the daemon loads it."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from harness.errors import ImageError
from harness.sandbox import check_image_archive, load_image_archive

CAP = 64 * 2**20


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_random_bytes_are_not_a_tar(tmp_path):
    p = tmp_path / "x.tar"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(ImageError, match="not a tar archive"):
        check_image_archive(p, max_bytes=CAP)


def test_tar_without_manifest(tmp_path):
    p = _tar(tmp_path / "x.tar", {"hello.txt": b"hi"})
    with pytest.raises(ImageError, match="no manifest.json"):
        check_image_archive(p, max_bytes=CAP)


def test_manifest_with_two_images(tmp_path):
    entry = {"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": []}
    p = _tar(tmp_path / "x.tar", {"manifest.json": json.dumps([entry, entry]).encode()})
    with pytest.raises(ImageError, match="holds 2 images"):
        check_image_archive(p, max_bytes=CAP)


def test_arm64_config_is_refused(tmp_path):
    p = _tar(tmp_path / "x.tar", {
        "manifest.json": json.dumps([{"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": []}]).encode(),
        "cfg.json": json.dumps({"os": "linux", "architecture": "arm64"}).encode(),
    })
    with pytest.raises(ImageError, match="linux/arm64"):
        check_image_archive(p, max_bytes=CAP)


def test_over_the_size_cap(tmp_path):
    p = _tar(tmp_path / "x.tar", {"pad": b"\0" * 10_000})
    with pytest.raises(ImageError, match="the cap is 1000 bytes"):
        check_image_archive(p, max_bytes=1000)


@pytest.mark.docker
def test_real_docker_save_loads(images, tmp_path):
    client = images
    image = client.images.get("edx-arena-test/busybox:latest")
    p = tmp_path / "busybox.tar"
    with open(p, "wb") as f:
        for chunk in image.save():
            f.write(chunk)
    config = check_image_archive(p, max_bytes=CAP)
    assert config["architecture"] == "amd64"
    info = load_image_archive(p, max_bytes=CAP, client=client)
    assert info.id == image.id
