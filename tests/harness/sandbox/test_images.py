"""Image intake: a docker-save archive is checked, then rewritten into a canonical archive the
daemon loads under the server's own name; the archive's own names never reach the daemon.

The hostile archives here are built from real ``docker save`` output of the local busybox
images (FROM scratch + busybox-static) or from scratch; each test removes what it loaded.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
import tracemalloc
import uuid

import pytest
from hostile_archives import Zeros, image_archive, members, sparse_layer, write_tar, zeros_layer

import docker
from harness.errors import ImageError
from harness.sandbox import check_image_archive, load_image_archive
from harness.sandbox.images import NAMESPACE, _guarded_load, namespace_ref

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


def _with_manifest(saved, path, edit, *, extra: tuple[str, bytes] | None = None):
    """A copy of a real docker-save archive whose manifest entry is ``edit(entry)``; ``extra``
    is one more member appended at the end (``(name, data)``)."""
    out = []
    for info, data in members(saved):
        if info.name == "manifest.json":
            data = json.dumps([edit(json.loads(data)[0])]).encode()
        out.append((info, data))
    if extra is not None:
        out.append((tarfile.TarInfo(extra[0]), extra[1]))
    return write_tar(path, out)


def _retagged(saved, path, tag: str):
    """A copy of a real docker-save archive whose manifest claims ``tag``."""
    return _with_manifest(saved, path, lambda e: {**e, "RepoTags": [tag]})


def _forget(client, *refs):
    for ref in refs:
        try:
            client.images.remove(ref)
        except docker.errors.APIError:
            pass


@pytest.fixture
def owner(images):
    """A participant id of this test's own; the namespace tags it gets are removed after."""
    client = images
    who = f"t{uuid.uuid4().hex[:10]}"
    yield who
    for image in client.images.list(name=f"{NAMESPACE}{who}/*"):
        _forget(client, *[t for t in image.tags if t.startswith(f"{NAMESPACE}{who}/")])


@pytest.fixture
def victim(images):
    """A fresh tag on the busybox-user image: the name a hostile archive tries to take over."""
    client = images
    tag = f"edx-arena-test/victim-{uuid.uuid4().hex[:8]}:latest"
    client.images.get(BUSYBOX_USER).tag(tag)
    yield tag, client.images.get(BUSYBOX_USER).id
    _forget(client, tag)


@pytest.fixture(scope="module")
def saved(images, tmp_path_factory):
    """``docker save`` of the root busybox image (another image than the victim's)."""
    return _save(images, BUSYBOX, tmp_path_factory.mktemp("saved") / "busybox.tar")


def test_random_bytes_are_not_a_tar(tmp_path):
    p = tmp_path / "x.tar"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(ImageError, match="not a tar archive; create it with `docker save"):
        load_image_archive(p, max_bytes=CAP, owner=1)


def test_tar_without_manifest(tmp_path):
    p = _tar(tmp_path / "x.tar", {"hello.txt": b"hi"})
    with pytest.raises(ImageError, match=r"no manifest\.json"):
        load_image_archive(p, max_bytes=CAP, owner=1)


def test_manifest_with_two_images(tmp_path):
    entry = {"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": []}
    p = _tar(tmp_path / "x.tar", {"manifest.json": _manifest(entry, entry)})
    with pytest.raises(ImageError, match="holds 2 images; submit exactly one"):
        load_image_archive(p, max_bytes=CAP, owner=1)


def test_manifest_that_is_not_json(tmp_path):
    p = _tar(tmp_path / "x.tar", {"manifest.json": b"\xff not json"})
    with pytest.raises(ImageError, match=r"manifest\.json in the archive is not valid JSON"):
        load_image_archive(p, max_bytes=CAP, owner=1)


def test_manifest_without_config(tmp_path):
    p = _tar(tmp_path / "x.tar", {"manifest.json": _manifest({"RepoTags": ["x:1"], "Layers": []})})
    with pytest.raises(ImageError, match="names no image config"):
        load_image_archive(p, max_bytes=CAP, owner=1)


def test_arm64_config_is_refused(tmp_path):
    p = _tar(
        tmp_path / "x.tar",
        {
            "manifest.json": _manifest({"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": []}),
            "cfg.json": json.dumps({"os": "linux", "architecture": "arm64"}).encode(),
        },
    )
    with pytest.raises(ImageError, match="for linux/arm64; the server runs linux/amd64"):
        load_image_archive(p, max_bytes=CAP, owner=1)


def test_over_the_size_cap(tmp_path):
    p = _tar(tmp_path / "x.tar", {"pad": b"\0" * 10_000})
    with pytest.raises(ImageError, match="the cap is 1000 bytes"):
        load_image_archive(p, max_bytes=1000, owner=1)


@pytest.mark.docker
def test_real_docker_save_loads_under_the_servers_name(images, owner, saved):
    client = images
    expected = client.images.get(BUSYBOX).id
    assert check_image_archive(saved, max_bytes=CAP)["architecture"] == "amd64"
    info = load_image_archive(saved, max_bytes=CAP, owner=owner, client=client)
    assert info.id == expected and info.id.startswith("sha256:")
    name = f"{NAMESPACE}{owner}/{expected[7:19]}:latest"
    assert info.tags == (name,) == (namespace_ref(owner, expected),)
    assert client.images.get(name).id == expected
    assert client.images.get(BUSYBOX).id == expected  # the archive's own tag: untouched, not re-set
    assert (info.os, info.architecture) == ("linux", "amd64")
    # the same upload again: the same name, nothing moves
    assert load_image_archive(saved, max_bytes=CAP, owner=owner, client=client).tags == (name,)


@pytest.mark.docker
def test_archive_tagged_as_another_image_loads_under_the_servers_name(images, owner, saved, tmp_path):
    """The archive claims BUSYBOX_USER: its tag is dropped, the name keeps its image."""
    client = images
    before = client.images.get(BUSYBOX_USER).id
    forged = _retagged(saved, tmp_path / "forged.tar", BUSYBOX_USER)
    info = load_image_archive(forged, max_bytes=CAP, owner=owner, client=client)
    assert info.tags == (namespace_ref(owner, info.id),) and info.id != before
    assert client.images.get(BUSYBOX_USER).id == before


@pytest.mark.docker
def test_archive_claiming_a_reserved_name_does_not_create_it(images, owner, saved, tmp_path):
    client = images
    forged = _retagged(saved, tmp_path / "forged.tar", "edx-arena/runner:not-built-yet")
    info = load_image_archive(forged, max_bytes=CAP, owner=owner, client=client)
    assert info.tags == (namespace_ref(owner, info.id),)
    assert not client.images.list(name="edx-arena/runner:not-built-yet")


# ---- Issue 15: the archive's names never reach the daemon ----------------------------------


SHADOWS = {
    "./manifest.json": "the archive has two entries named './manifest.json' (once './', '//' and letter case",
    ".//manifest.json": "the archive has two entries named './/manifest.json' (once './', '//' and letter case",
    "/manifest.json": "the archive entry '/manifest.json' has an absolute path",
    "x/../manifest.json": "the archive entry 'x/../manifest.json' has a '..' path component",
}


@pytest.mark.docker
@pytest.mark.parametrize("shadow", list(SHADOWS))
def test_a_second_manifest_under_another_spelling_cannot_take_a_name(images, owner, saved, victim, tmp_path, shadow):
    """A harmless manifest.json, then the same file under another spelling naming the victim:
    the daemon's untar writes both to one path (the last wins). Refused; the victim keeps its image."""
    client = images
    victim_tag, victim_id = victim
    evil = json.dumps(
        [{**json.loads(dict((m.name, d) for m, d in members(saved))["manifest.json"])[0], "RepoTags": [victim_tag]}]
    )
    forged = _with_manifest(
        saved,
        tmp_path / "forged.tar",
        lambda e: {k: v for k, v in e.items() if k != "RepoTags"},
        extra=(shadow, evil.encode()),
    )
    try:
        with pytest.raises(ImageError, match=re.escape(SHADOWS[shadow])):
            load_image_archive(forged, max_bytes=CAP, owner=owner, client=client)
    finally:
        assert client.images.get(victim_tag).id == victim_id


@pytest.mark.docker
@pytest.mark.parametrize("key", ["repotags", "REPOTAGS", "repoTags"])
def test_a_tags_key_in_another_case_cannot_take_a_name(images, owner, saved, victim, tmp_path, key):
    """Go's JSON decoder matches ``repotags`` to ``RepoTags``: loaded, but under the server's name only."""
    client = images
    victim_tag, victim_id = victim
    forged = _with_manifest(
        saved, tmp_path / "forged.tar", lambda e: {**{k: v for k, v in e.items() if k != "RepoTags"}, key: [victim_tag]}
    )
    info = load_image_archive(forged, max_bytes=CAP, owner=owner, client=client)
    assert info.tags == (namespace_ref(owner, info.id),)
    assert client.images.get(victim_tag).id == victim_id


@pytest.mark.docker
def test_two_tags_keys_differing_in_case_are_refused(images, owner, saved, victim, tmp_path):
    """``RepoTags`` harmless for Python, ``repotags`` last (Go's winner) naming the victim."""
    client = images
    victim_tag, victim_id = victim
    forged = _with_manifest(
        saved, tmp_path / "forged.tar", lambda e: {**e, "RepoTags": ["mine/solver:1"], "repotags": [victim_tag]}
    )
    with pytest.raises(ImageError, match=r"manifest\.json in the archive has the key 'repotags' twice"):
        load_image_archive(forged, max_bytes=CAP, owner=owner, client=client)
    assert client.images.get(victim_tag).id == victim_id
    assert not client.images.list(name="mine/solver:1")


@pytest.mark.docker
def test_a_load_that_moves_a_tag_is_undone_and_refused(images, saved, victim, tmp_path):
    """The last line of defence, fed a raw (not canonical) archive tagged as the victim: the
    tag is put back on its image and the load refused."""
    client = images
    victim_tag, victim_id = victim
    forged = _retagged(saved, tmp_path / "forged.tar", victim_tag)
    with open(forged, "rb") as f, pytest.raises(ImageError, match="re-pointed image names on the server"):
        _guarded_load(client, f, client.images.get(BUSYBOX).id)
    assert client.images.get(victim_tag).id == victim_id
    assert client.images.get(BUSYBOX).id  # an image others use is never removed


# ---- Issue 15: bombs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "name", "size"), [("gz", "gzip", 64 * 2**20), ("bz2", "bzip2", 2**20), ("xz", "xz", 2**20)]
)
def test_a_compressed_upload_is_refused_unread(tmp_path, mode, name, size):
    """A 64 MiB tar in a 64 kB gzip: refused from its first bytes, nothing unpacked."""
    p = tmp_path / f"bomb.tar.{mode}"
    with tarfile.open(p, f"w:{mode}") as tar:
        info = tarfile.TarInfo("padding")
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(size)))
    started = time.monotonic()
    with pytest.raises(ImageError, match=rf"the upload is {name}-compressed; a docker save archive is a plain tar"):
        load_image_archive(p, max_bytes=CAP, owner=1)
    assert time.monotonic() - started < 0.5


def test_many_entries_are_refused_in_constant_memory(tmp_path):
    p = tmp_path / "many.tar"
    with tarfile.open(p, "w") as tar:
        for i in range(20_000):
            tar.addfile(tarfile.TarInfo(f"e{i}"), io.BytesIO())
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="the tar has more than 4096 entries"):
            load_image_archive(p, max_bytes=CAP, owner=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak


@pytest.mark.docker
def test_a_gzip_layer_that_unpacks_past_the_cap_is_refused(images, owner, tmp_path):
    """A 70 kB archive whose gzip layer unpacks to 64 MiB: the daemon would write it all."""
    client = images
    blob, diff_id = zeros_layer(64 * 2**20)
    archive, image_id = image_archive(tmp_path / "bomb.tar", [(blob, diff_id)])
    assert archive.stat().st_size < 200_000
    try:
        with pytest.raises(
            ImageError, match=r"the image unpacks to more than the 16777216 byte image cap \(at layer 1 of 1"
        ):
            load_image_archive(archive, max_bytes=16 * 2**20, owner=owner, client=client)
        assert not client.images.list(name=image_id) and not _present(client, image_id)
    finally:
        _forget(client, image_id)


@pytest.mark.docker
def test_a_sparse_file_in_a_layer_is_refused(images, owner, tmp_path):
    """9 kB of layer that Go's tar reader unpacks to a 64 MiB file (its hole written as zeros)."""
    client = images
    layer = sparse_layer(64 * 2**20)
    archive, image_id = image_archive(tmp_path / "sparse.tar", [(layer, layer)])
    try:
        with pytest.raises(ImageError, match=r"layer 1 of 1 \(l0/layer.tar\) is refused: the tar holds a sparse file"):
            load_image_archive(archive, max_bytes=CAP, owner=owner, client=client)
        assert not _present(client, image_id)
    finally:
        _forget(client, image_id)


@pytest.mark.docker
def test_a_gzip_layer_within_the_cap_loads(images, owner, tmp_path):
    """What containerd-store ``docker save`` writes (gzip layers) still loads, unpacked."""
    client = images
    blob, diff_id = zeros_layer(2**20)
    archive, image_id = image_archive(tmp_path / "gz.tar", [(blob, diff_id), (blob, diff_id)])
    try:
        info = load_image_archive(archive, max_bytes=CAP, owner=owner, client=client)
        assert info.id == image_id and info.tags == (namespace_ref(owner, image_id),)
        assert client.images.get(image_id).attrs["RootFS"]["Layers"] == [diff_id, diff_id]
    finally:
        _forget(client, namespace_ref(owner, image_id), image_id)


def _present(client, image_id) -> bool:
    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.mark.docker
def test_a_docker_save_with_a_repeated_layer_loads(images, owner, tmp_path):
    """``docker save`` links a repeated layer to its first copy (a symbolic link inside the
    archive): that link is followed, the image loads whole."""
    client = images
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {
            "Dockerfile": b"FROM scratch\nCOPY id.txt /id.txt\nCOPY id.txt /id.txt\n",
            "id.txt": f"{uuid.uuid4()}\n".encode(),
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    tag = f"edx-arena-test/repeated-{uuid.uuid4().hex[:8]}:latest"
    image, _ = client.images.build(fileobj=buf, custom_context=True, tag=tag, network_mode="none", rm=True)
    archive = _save(client, tag, tmp_path / "repeated.tar")
    layers = image.attrs["RootFS"]["Layers"]
    client.images.remove(tag)
    assert len(layers) == 2 and layers[0] == layers[1]
    assert any(m.issym() for m, _ in members(archive))
    try:
        info = load_image_archive(archive, max_bytes=CAP, owner=owner, client=client)
        assert info.id == image.id
        assert client.images.get(info.id).attrs["RootFS"]["Layers"] == layers
    finally:
        _forget(client, namespace_ref(owner, image.id))


def test_an_archive_that_changes_while_it_is_loaded_ends_the_stream(tmp_path):
    """Each layer is hashed again on its way to the daemon: bytes other than the checked ones
    end the stream short (the daemon's untar then fails) with a platform error."""
    from harness.errors import PlatformError
    from harness.sandbox.images import _canonical_archive, _canonical_tar

    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    layer = plain.getvalue()
    archive, _ = image_archive(tmp_path / "x.tar", [(layer, layer)])
    canon = _canonical_archive(archive, max_bytes=CAP)
    data = bytearray(archive.read_bytes())
    at = data.index(b"hi\n")
    data[at : at + 3] = b"HI\n"
    archive.write_bytes(bytes(data))
    failures = []
    with pytest.raises(PlatformError, match="the uploaded archive changed on the server while it was loaded"):
        b"".join(_canonical_tar(archive, canon, failures))
    assert isinstance(failures[0], PlatformError)
