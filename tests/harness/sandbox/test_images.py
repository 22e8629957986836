"""Image intake: a docker-save archive is checked before the daemon loads it."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from harness.errors import ImageError
from harness.sandbox import check_image_archive, load_image_archive

BUSYBOX = "edx-arena-test/busybox:latest"
BUSYBOX_USER = "edx-arena-test/busybox-user:latest"

CAP = 64 * 2**20


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _manifest(*entries) -> bytes:
    return json.dumps(list(entries)).encode()


def _save(client, ref, path):
    with open(path, "wb") as f:
        for chunk in client.images.get(ref).save():
            f.write(chunk)
    return path


def _retagged(saved, path, tag: str):
    """A copy of a real docker-save archive whose manifest claims ``tag``."""
    with tarfile.open(saved) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest[0]["RepoTags"] = [tag]
                data = json.dumps(manifest).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def test_random_bytes_are_not_a_tar(tmp_path):
    p = tmp_path / "x.tar"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(ImageError, match="not a tar archive; create it with `docker save"):
        load_image_archive(p, max_bytes=CAP)


def test_tar_without_manifest(tmp_path):
    p = _tar(tmp_path / "x.tar", {"hello.txt": b"hi"})
    with pytest.raises(ImageError, match=r"no manifest\.json"):
        load_image_archive(p, max_bytes=CAP)


def test_manifest_with_two_images(tmp_path):
    entry = {"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": []}
    p = _tar(tmp_path / "x.tar", {"manifest.json": _manifest(entry, entry)})
    with pytest.raises(ImageError, match="holds 2 images; submit exactly one"):
        load_image_archive(p, max_bytes=CAP)


def test_manifest_that_is_not_json(tmp_path):
    p = _tar(tmp_path / "x.tar", {"manifest.json": b"\xff not json"})
    with pytest.raises(ImageError, match=r"manifest\.json in the archive is not valid JSON"):
        load_image_archive(p, max_bytes=CAP)


def test_manifest_without_config(tmp_path):
    p = _tar(tmp_path / "x.tar", {"manifest.json": _manifest({"RepoTags": ["x:1"], "Layers": []})})
    with pytest.raises(ImageError, match="names no image config"):
        load_image_archive(p, max_bytes=CAP)


def test_arm64_config_is_refused(tmp_path):
    p = _tar(
        tmp_path / "x.tar",
        {
            "manifest.json": _manifest({"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": []}),
            "cfg.json": json.dumps({"os": "linux", "architecture": "arm64"}).encode(),
        },
    )
    with pytest.raises(ImageError, match="for linux/arm64; the server runs linux/amd64"):
        load_image_archive(p, max_bytes=CAP)


def test_over_the_size_cap(tmp_path):
    p = _tar(tmp_path / "x.tar", {"pad": b"\0" * 10_000})
    with pytest.raises(ImageError, match="the cap is 1000 bytes"):
        load_image_archive(p, max_bytes=1000)


@pytest.mark.docker
def test_real_docker_save_loads_and_returns_its_digest(images, tmp_path):
    client = images
    expected = client.images.get(BUSYBOX).id
    p = _save(client, BUSYBOX, tmp_path / "busybox.tar")
    assert check_image_archive(p, max_bytes=CAP)["architecture"] == "amd64"
    info = load_image_archive(p, max_bytes=CAP, client=client)
    assert info.id == expected and info.id.startswith("sha256:")
    assert BUSYBOX in info.tags
    assert (info.os, info.architecture) == ("linux", "amd64")


@pytest.mark.docker
def test_archive_tagged_as_another_image_is_refused(images, tmp_path):
    """Loading would re-point BUSYBOX_USER at the root busybox image: refused, name untouched."""
    client = images
    before = client.images.get(BUSYBOX_USER).id
    saved = _save(client, BUSYBOX, tmp_path / "busybox.tar")
    forged = _retagged(saved, tmp_path / "forged.tar", BUSYBOX_USER)
    with pytest.raises(ImageError, match="tagged 'edx-arena-test/busybox-user:latest', a name another image"):
        load_image_archive(forged, max_bytes=CAP, client=client)
    assert client.images.get(BUSYBOX_USER).id == before


@pytest.mark.docker
def test_archive_claiming_a_reserved_name_is_refused(images, tmp_path):
    client = images
    saved = _save(client, BUSYBOX, tmp_path / "busybox.tar")
    forged = _retagged(saved, tmp_path / "forged.tar", "edx-arena/runner:not-built-yet")
    with pytest.raises(ImageError, match="a name reserved for the platform"):
        load_image_archive(forged, max_bytes=CAP, client=client)
    assert not client.images.list(name="edx-arena/runner:not-built-yet")
