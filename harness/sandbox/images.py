"""Image intake. A ``docker save`` archive is rewritten into a canonical archive that names
no image before the daemon loads it (:func:`load_image_archive`); an image link from an
allow-listed registry is checked at the registry before the daemon pulls it (:func:`pull_image`).

Why rewrite instead of check: the daemon does not read an archive the way a checker does
(it untars the whole archive first, so ``./manifest.json`` replaces ``manifest.json``; Go's
JSON decoder takes ``repotags`` for ``RepoTags`` and the last of duplicate keys; without a
manifest it falls back to ``repositories``), and every tag an archive names is moved to the
loaded image, whatever it pointed at before. So the daemon only ever sees an archive this
module wrote: one ``manifest.json`` without tags, the image config byte for byte (its digest
is the image id) and the layers unpacked, each checked against the config's diff IDs. The
loaded image is then tagged into a namespace the server owns, and the daemon's tags are
compared before and after the load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import requests

import docker
from harness.errors import ImageError, PlatformError
from harness.sandbox.model import ImageInfo
from harness.sandbox.registry import check_link, registry_is_secure
from harness.sandbox.runner import PLATFORM, docker_client, inspect_image
from harness.sandbox.tarscan import (
    BLOCK,
    MAX_LAYER_ENTRIES,
    MAX_LAYERS,
    FileSource,
    LayerScan,
    TarEntry,
    TarRefused,
    TooLarge,
    compression,
    decompressed,
    is_tar_header,
    scan_layer,
    walk,
)

__all__ = [
    "MAX_ARCHIVE_ENTRIES",
    "NAMESPACE",
    "ImageReference",
    "check_image_archive",
    "load_image_archive",
    "namespace_ref",
    "parse_reference",
    "pull_image",
    "registry_of",
]

_MAX_JSON = 2**20  # manifest and config are small; a huge one is hostile
_SAVE_HINT = "create it with `docker save IMAGE -o image.tar`"
#: Uploaded images are tagged ``edx-arena-sub/<participant id>/<short id>``; nothing else
#: tags into it (an archive's own tags are dropped).
NAMESPACE = "edx-arena-sub/"
#: Members of one archive: ``docker save`` of a 127-layer image writes about 520.
MAX_ARCHIVE_ENTRIES = 4096
_MAX_NAME = 4096
_CHUNK = 2**20


# ---- Reading an upload ----------------------------------------------------------------------


def _normalise(name: str) -> str:
    """The name the daemon's untar would write (``./a//b`` is ``a/b``); absolute names and
    ``..`` are refused rather than normalised."""
    shown = name[:200]
    if len(name) > _MAX_NAME:
        raise ImageError(f"an archive entry's name is {len(name)} characters long; {_SAVE_HINT}")
    if name.startswith("/"):
        raise ImageError(f"the archive entry {shown!r} has an absolute path; {_SAVE_HINT}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"the archive entry {shown!r} has a '..' path component; {_SAVE_HINT}")
    return "/".join(parts)


@dataclass(frozen=True)
class _Index:
    entries: dict[str, TarEntry]
    #: A symbolic link's name → the archive name it points at (``docker save`` links a
    #: repeated layer to its first copy).
    links: dict[str, str]


def _index(path: str | os.PathLike, *, max_bytes: int) -> _Index:
    """Every member's header (not its data), in one pass with constant memory per member."""
    size = os.stat(path).st_size
    if size > max_bytes:
        raise ImageError(f"the image archive is {size} bytes; the cap is {max_bytes} bytes")
    entries: dict[str, TarEntry] = {}
    links: dict[str, str] = {}
    folded: set[str] = set()
    with open(path, "rb") as f:
        head = f.read(BLOCK)
        kind = compression(head)
        if kind:
            raise ImageError(
                f"the upload is {kind}-compressed; a docker save archive is a plain tar: upload the .tar itself "
                f"(not compressed), {_SAVE_HINT}"
            )
        if not is_tar_header(head):
            raise ImageError(f"the upload is not a tar archive; {_SAVE_HINT}")
        f.seek(0)
        try:
            for entry in walk(FileSource(f, size), max_entries=MAX_ARCHIVE_ENTRIES):
                key = _normalise(entry.name)
                shown = entry.name[:200]
                if entry.kind == "dir" and not key:
                    continue  # "./": the archive's root
                if entry.kind == "hardlink":
                    raise ImageError(f"the archive entry {shown!r} is a hard link; {_SAVE_HINT}")
                if entry.kind == "device":
                    raise ImageError(f"the archive entry {shown!r} is a device or FIFO; {_SAVE_HINT}")
                if entry.kind == "other":
                    raise ImageError(f"the archive entry {shown!r} has tar type {entry.typeflag!r}; {_SAVE_HINT}")
                if not key:
                    raise ImageError(f"the archive has an entry without a name; {_SAVE_HINT}")
                if key.casefold() in folded:
                    raise ImageError(
                        f"the archive has two entries named {shown!r} (once './', '//' and letter case are "
                        f"ignored): which one the daemon would use is ambiguous, so the archive is refused; {_SAVE_HINT}"
                    )
                folded.add(key.casefold())
                if entry.kind == "symlink":
                    target = entry.linkname
                    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(key), target))
                    if target.startswith("/") or resolved == ".." or resolved.startswith("../") or resolved == ".":
                        raise ImageError(
                            f"the archive entry {shown!r} is a link to {target[:200]!r}, outside the archive; {_SAVE_HINT}"
                        )
                    links[key] = resolved
                entries[key] = entry
        except TarRefused as exc:
            raise ImageError(f"{exc}; {_SAVE_HINT}") from None
    return _Index(entries, links)


def _regular(index: _Index, name: object, what: str) -> TarEntry:
    if not isinstance(name, str):
        raise ImageError(f"manifest.json names no {what}; {_SAVE_HINT}")
    key = _normalise(name)
    shown = name[:200]
    if key in index.links:
        target = index.links[key]
        entry = index.entries.get(target)
        if entry is None or entry.kind != "file":
            raise ImageError(f"the {what} {shown!r} is a link to {target[:200]!r}, which is not a file in the archive")
        return entry
    entry = index.entries.get(key)
    if entry is None:
        raise ImageError(f"the archive has no {shown}; {_SAVE_HINT}")
    if entry.kind != "file":
        raise ImageError(f"{shown} in the archive is not a regular file")
    return entry


def _read_small(path: str | os.PathLike, entry: TarEntry, name: str) -> bytes:
    if entry.size > _MAX_JSON:
        raise ImageError(f"{name[:200]} in the archive is not a small regular file")
    with open(path, "rb") as f:
        f.seek(entry.offset)
        return f.read(entry.size)


class _DuplicateKey(Exception):
    pass


def _strict_json(data: bytes, name: str, *, fold_case: bool) -> object:
    """JSON without duplicate keys (Go keeps the last, Python too, but a reader in between
    may not); with ``fold_case`` keys differing only in case count as duplicates too (Go
    matches ``repotags`` to ``RepoTags``)."""

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            k = key.casefold() if fold_case else key
            if k in seen:
                raise _DuplicateKey(key)
            seen.add(k)
        return dict(items)

    try:
        return json.loads(data, object_pairs_hook=pairs)
    except _DuplicateKey as exc:
        raise ImageError(f"{name[:200]} in the archive has the key {exc.args[0][:100]!r} twice; {_SAVE_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ImageError(f"{name[:200]} in the archive is not valid JSON") from None


@dataclass(frozen=True)
class _Blob:
    entry: TarEntry
    scan: LayerScan


@dataclass(frozen=True)
class _Canonical:
    config: dict
    config_raw: bytes
    #: ``sha256:<hex>`` of the config JSON: the id the daemon gives the loaded image.
    image_id: str
    blobs: tuple[_Blob, ...]
    #: For each of the manifest's layers, in order, the index of its blob.
    order: tuple[int, ...]
    unpacked_bytes: int


def _bounded_reader(f, entry: TarEntry) -> Callable[[int], bytes]:
    f.seek(entry.offset)
    remaining = entry.size

    def read(n: int) -> bytes:
        nonlocal remaining
        data = f.read(min(n, remaining))
        remaining -= len(data)
        return data

    return read


def _canonical_archive(path: str | os.PathLike, *, max_bytes: int) -> _Canonical:
    """Check the upload and plan the canonical archive: raises :class:`ImageError` naming the
    broken rule."""
    index = _index(path, max_bytes=max_bytes)
    manifest = _strict_json(
        _read_small(path, _regular(index, "manifest.json", "manifest"), "manifest.json"),
        "manifest.json",
        fold_case=True,
    )
    if not isinstance(manifest, list) or len(manifest) != 1:
        count = len(manifest) if isinstance(manifest, list) else "no"
        raise ImageError(f"the archive holds {count} images; submit exactly one")
    item = manifest[0] if isinstance(manifest[0], dict) else {}
    config_name = item.get("Config")
    if not isinstance(config_name, str):
        raise ImageError("manifest.json names no image config")
    layers = item.get("Layers") or []
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise ImageError("the archive's manifest is malformed (Layers is not a list of names); " + _SAVE_HINT)
    if len(layers) > MAX_LAYERS:
        raise ImageError(f"the image has {len(layers)} layers; the limit is {MAX_LAYERS} (squash some)")
    raw_config = _read_small(path, _regular(index, config_name, "image config"), config_name)
    config = _strict_json(raw_config, config_name, fold_case=False)
    if not isinstance(config, dict):
        raise ImageError("the archive's manifest or image config is malformed; " + _SAVE_HINT)
    if len({k.casefold() for k in config}) != len(config):
        raise ImageError(f"the image config has keys that differ only in letter case; {_SAVE_HINT}")
    platform = (config.get("os"), config.get("architecture"))
    if platform != PLATFORM:
        raise ImageError(f"the image is for {platform[0]}/{platform[1]}; the server runs linux/amd64 images")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        count = len(diff_ids) if isinstance(diff_ids, list) else "no"
        raise ImageError(f"the image config lists {count} layers and manifest.json {len(layers)}; {_SAVE_HINT}")
    blobs: list[_Blob] = []
    order: list[int] = []
    by_offset: dict[int, int] = {}
    unpacked = files = 0
    with open(path, "rb") as f:
        for i, name in enumerate(layers):
            label = f"layer {i + 1} of {len(layers)} ({name[:100]})"
            entry = _regular(index, name, "layer")
            k = by_offset.get(entry.offset)
            if k is None:
                try:
                    scan = scan_layer(
                        _bounded_reader(f, entry),
                        max_unpacked=max_bytes - unpacked,
                        max_entries=MAX_LAYER_ENTRIES - files,
                    )
                except TooLarge:
                    raise ImageError(
                        f"the image unpacks to more than the {max_bytes} byte image cap (at {label})"
                    ) from None
                except TarRefused as exc:
                    raise ImageError(f"{label} is refused: {exc}") from None
                k = by_offset[entry.offset] = len(blobs)
                blobs.append(_Blob(entry, scan))
            scan = blobs[k].scan
            # A layer listed twice is applied twice: it counts twice.
            unpacked += scan.unpacked_bytes
            files += scan.entries
            if unpacked > max_bytes:
                raise ImageError(f"the image unpacks to more than the {max_bytes} byte image cap (at {label})")
            if files > MAX_LAYER_ENTRIES:
                raise ImageError(f"the image's layers hold more than {MAX_LAYER_ENTRIES} files (at {label})")
            if scan.diff_id != diff_ids[i]:
                raise ImageError(
                    f"{label} does not match the image config (its digest is {scan.diff_id[:23]}…, the config "
                    f"says {str(diff_ids[i])[:23]}…); the archive is damaged or was edited, {_SAVE_HINT}"
                )
            order.append(k)
    return _Canonical(
        config=config,
        config_raw=raw_config,
        image_id="sha256:" + hashlib.sha256(raw_config).hexdigest(),
        blobs=tuple(blobs),
        order=tuple(order),
        unpacked_bytes=unpacked,
    )


def check_image_archive(path: str | os.PathLike, *, max_bytes: int) -> dict:
    """Validate a docker-save archive without loading it; returns its image config.

    Rules: size ≤ ``max_bytes``; a plain (uncompressed) tar of at most
    :data:`MAX_ARCHIVE_ENTRIES` members, no two with the same name once normalised, no
    absolute or ``..`` names, links only inside the archive, no hard links or devices;
    ``manifest.json`` lists exactly one image; its config says linux/amd64; at most
    :data:`~harness.sandbox.tarscan.MAX_LAYERS` layers, each matching the config's diff ID,
    together unpacking to at most ``max_bytes`` with no sparse files. Raises
    :class:`ImageError` naming the broken rule.
    """
    return _canonical_archive(path, max_bytes=max_bytes).config


# ---- Loading: the canonical archive, then the server's own name -----------------------------


def _header(name: str, size: int, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = (0, 0o755, 0) if directory else (size, 0o644, 0)
    if directory:
        info.type = tarfile.DIRTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _member(name: str, data: bytes) -> bytes:
    return _header(name, len(data)) + data + bytes(-len(data) % BLOCK)


def _canonical_tar(path: str | os.PathLike, canon: _Canonical, failures: list[Exception]) -> Iterator[bytes]:
    """The archive the daemon loads: ``manifest.json`` without tags, ``config.json`` byte for
    byte, ``layers/NNN.tar`` unpacked. Each layer is hashed again on the way out; a layer that
    is not the one checked ends the stream short, so the daemon's untar fails."""
    try:
        names = [f"layers/{k:03d}.tar" for k in range(len(canon.blobs))]
        manifest = json.dumps([{"Config": "config.json", "Layers": [names[k] for k in canon.order]}]).encode()
        yield _member("manifest.json", manifest)
        yield _member("config.json", canon.config_raw)
        if canon.blobs:
            yield _header("layers", 0, directory=True)
        with open(path, "rb") as f:
            for name, blob in zip(names, canon.blobs):
                expected = blob.scan.unpacked_bytes
                yield _header(name, expected)
                sha, count = hashlib.sha256(), 0
                _, read = decompressed(_bounded_reader(f, blob.entry))
                while chunk := read(_CHUNK):
                    count += len(chunk)
                    if count > expected:
                        break
                    sha.update(chunk)
                    yield chunk
                if count != expected or "sha256:" + sha.hexdigest() != blob.scan.diff_id:
                    raise PlatformError(
                        "the uploaded archive changed on the server while it was loaded; submit it again"
                    )
                yield bytes(-expected % BLOCK)
        yield bytes(2 * BLOCK)
    except Exception as exc:  # requests may wrap or swallow it: the caller re-raises this one
        failures.append(exc)
        raise


def namespace_ref(owner: int | str, image_id: str) -> str:
    """``edx-arena-sub/<owner>/<first 12 hex of the id>:latest``, the name an upload gets."""
    owner = str(owner)
    if not re.fullmatch(_COMPONENT, owner):
        raise ValueError(f"{owner!r} is not usable as an image name component")
    return f"{NAMESPACE}{owner}/{image_id.removeprefix('sha256:')[:12]}:latest"


def _tag_map(client: docker.DockerClient) -> dict[str, str]:
    """Every tag on the daemon → the image id it names."""
    tags: dict[str, str] = {}
    for image in client.api.images():
        for tag in image.get("RepoTags") or ():
            if tag != "<none>:<none>":
                tags[tag] = image["Id"]
    return tags


def _exists(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def _discard(client: docker.DockerClient, image_id: str, *, existed: bool, ref: str | None = None) -> None:
    """Take back what a refused load left: the server's tag, and the image if it is new."""
    for target in ([ref] if ref else []) + ([] if existed else [image_id]):
        try:
            client.images.remove(target, noprune=False)
        except docker.errors.APIError:
            pass  # gone already, or another tag (another upload of the same image) keeps it


def _guarded_load(client: docker.DockerClient, data, image_id: str) -> list[str]:
    """Load ``data`` and make sure the load re-pointed no tag: any tag that named another
    image before and names ``image_id`` after is put back, any new tag on it outside the
    namespace is removed, and the load is refused. A tag that disappeared or moved to a
    third image is someone else's doing (a concurrent clean-up or build), not this load's.
    Returns the ids the daemon says it loaded."""
    existed = _exists(client, image_id) is not None
    before = _tag_map(client)
    loaded = client.images.load(data)
    after = _tag_map(client)
    moved = sorted(t for t, old in before.items() if old != image_id and after.get(t) == image_id)
    added = sorted(t for t, new in after.items() if new == image_id and t not in before and not t.startswith(NAMESPACE))
    if moved or added:
        for tag in moved:
            repo, _, name = tag.rpartition(":")
            client.api.tag(before[tag], repo, name)
        for tag in added:
            try:
                client.api.remove_image(tag, noprune=True)
            except docker.errors.APIError:
                pass
        _discard(client, image_id, existed=existed)
        names = ", ".join(repr(t) for t in (moved + added)[:5])
        raise ImageError(
            f"loading the archive re-pointed image names on the server ({names}); they were restored and the "
            "upload refused"
        )
    return [image.id for image in loaded]


def _stream_failure(exc: Exception) -> Exception:
    """What ended the canonical stream, as an error for the participant or the platform."""
    if isinstance(exc, ImageError | PlatformError):
        return exc
    return PlatformError(f"the server could not read the uploaded archive back ({type(exc).__name__}); submit it again")


def load_image_archive(
    path: str | os.PathLike, *, max_bytes: int, owner: int | str, client: docker.DockerClient | None = None
) -> ImageInfo:
    """Check a docker-save archive, load its canonical rewrite, tag it into the server's
    namespace; returns the image, whose ``tags`` is just that name
    (:func:`namespace_ref`; ``owner`` is the participant's id).

    The archive's own tags are ignored: an upload cannot give, take or move any name on the
    daemon. Every failure is an :class:`ImageError` with a message for the participant (a
    :class:`PlatformError` if the daemon cannot be reached); a refusal leaves nothing behind.
    """
    canon = _canonical_archive(path, max_bytes=max_bytes)
    image_id = canon.image_id
    ref = namespace_ref(owner, image_id)
    client = client or docker_client(timeout=600)
    failures: list[Exception] = []
    try:
        existed = _exists(client, image_id) is not None
        try:
            ids = _guarded_load(client, _canonical_tar(path, canon, failures), image_id)
        except ImageError:
            raise
        except Exception as exc:  # the stream's own error may come back as it was, or wrapped
            if failures:
                raise _stream_failure(failures[0]) from None
            if not isinstance(exc, docker.errors.APIError | docker.errors.ImageLoadError):
                raise
            detail = exc.explanation if isinstance(exc, docker.errors.APIError) else str(exc)
            _discard(client, image_id, existed=existed)
            raise ImageError(f"the daemon refused the archive: {str(detail)[:300]}") from None
        if ids != [image_id]:
            _discard(client, image_id, existed=existed)
            raise ImageError(f"the archive loaded {len(ids)} images, not the one its config names; {_SAVE_HINT}")
        current = _exists(client, ref)
        if current not in (None, image_id):  # the same 48-bit prefix: never re-point a name
            _discard(client, image_id, existed=existed)
            raise ImageError("an image with the same short id is already stored for you; change the image and retry")
        repo, _, tag = ref.rpartition(":")
        client.api.tag(image_id, repo, tag)
        info = inspect_image(image_id, client=client)
        if (info.os, info.architecture) != PLATFORM:  # the daemon's reading of the config decides
            _discard(client, image_id, existed=existed, ref=ref)
            raise ImageError(f"the image is for {info.os}/{info.architecture}; the server runs linux/amd64 images")
        return dataclasses.replace(info, tags=(ref,))
    except (docker.errors.DockerException, requests.RequestException) as exc:
        if failures:
            raise _stream_failure(failures[0]) from None
        raise PlatformError(f"the container platform failed while loading the archive: {type(exc).__name__}") from None


# ---- Image links: pull from an allow-listed registry --------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?",
    re.ASCII,  # Docker's \w is ASCII; a Unicode tag would reach the daemon and come back a 400
)
#: Docker's limit on a repository name (registry and path), longer ones the daemon refuses.
_NAME_MAX = 255


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference ``[registry/]path[:tag][@digest]`` (Docker's grammar)."""

    registry: str | None
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}" if self.registry else self.path

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(ref: str) -> ImageReference:
    """Split ``ref``; the first component is a registry host when it has a ``.`` or ``:`` or is
    ``localhost`` (Docker's rule), so ``team/solver:1`` is a plain local name."""
    match = _REFERENCE.fullmatch(ref)  # not match(): "$" would let a trailing newline through
    if not match or len(ref) > 500:
        raise ImageError(
            f"{ref[:100]!r} is not a valid image reference (expected [registry/]name[:tag][@sha256:digest])"
        )
    domain, path = match["domain"], match["path"]
    if len(f"{domain}/{path}" if domain else path) > _NAME_MAX:
        raise ImageError(f"{ref[:100]!r}… is not a valid image reference: its name is over {_NAME_MAX} characters")
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        domain, path = None, f"{domain}/{path}"  # e.g. "team/solver": a repository path, not a host
    return ImageReference(domain, path, match["tag"], match["digest"])


def registry_of(ref: str) -> str | None:
    """The registry host (``host[:port]``) ``ref`` names, or ``None`` for a plain local name."""
    try:
        return parse_reference(ref).registry
    except ImageError:
        return None


def _allowed(reference: ImageReference, allowlist: Sequence[str]) -> bool:
    """Each entry is ``host[:port]`` or ``host[:port]/path-prefix``; hosts compare case-insensitively."""
    repo = f"{(reference.registry or '').lower()}/{reference.path}"
    for entry in allowlist:
        entry = entry.strip().rstrip("/")
        if not entry:
            continue
        host, _, prefix = entry.partition("/")
        wanted = f"{host.lower()}/{prefix}" if prefix else host.lower()
        if repo == wanted or repo.startswith(wanted + "/"):
            return True
    return False


def _pull_failure(ref: str, exc: docker.errors.APIError) -> ImageError:
    detail = str(exc.explanation or exc)
    low = detail.lower()
    if exc.status_code == 404 or "manifest unknown" in low or "not found" in low:
        why = "the registry has no such image or tag"
    elif (
        exc.status_code in (401, 403)
        or "unauthorized" in low
        or "denied" in low
        or "authentication required" in low
        or "no basic auth" in low
    ):
        why = "the registry refused access (a private image?); make the image pullable without credentials"
    else:
        why = "the pull failed"
    return ImageError(f"cannot pull {ref!r}: {why} ({detail[:300]})")


def _remove_quietly(client: docker.DockerClient, ref: str) -> None:
    try:
        client.images.remove(ref)
    except docker.errors.APIError:
        pass


def pull_image(ref: str, *, allowlist: Sequence[str], max_bytes: int, timeout: float) -> tuple[ImageInfo, str]:
    """Pull ``ref`` from an allow-listed registry and pin it; returns ``(info, pinned reference)``.

    The tag is resolved to its manifest digest first and the pull is by that digest, so what
    runs is exactly what was resolved even if the tag moves meanwhile; the pinned reference is
    ``registry/path:tag@sha256:…`` (for a multi-platform index, the digest of its linux/amd64
    manifest). Before the daemon pulls anything the registry's manifest and blobs are checked
    (:func:`~harness.sandbox.registry.check_link`): at most
    :data:`~harness.sandbox.tarscan.MAX_LAYERS` layers, announced and unpacked sizes at most
    ``max_bytes``, no sparse files, no layers from outside the registry. The pulled image's
    size is checked again at the end; everything must arrive within ``timeout`` seconds. Every
    failure is an :class:`ImageError` (outcome ``image_invalid``) with a message for the
    participant.
    """
    reference = parse_reference(ref)
    if reference.registry is None:
        raise ImageError(f"{ref!r} names no registry; a link looks like registry.example:5000/team/solver:1.2")
    if not _allowed(reference, allowlist):
        allowed = ", ".join(a.strip() for a in allowlist if a.strip()) or "none are configured"
        raise ImageError(f"the registry {reference.registry!r} is not on this server's allow-list (allowed: {allowed})")
    deadline = time.monotonic() + timeout
    try:
        client = docker_client(timeout=max(1, int(timeout)))
    except docker.errors.DockerException as exc:
        raise PlatformError(f"the container platform is unavailable: {type(exc).__name__}") from None
    try:
        try:
            data = client.images.get_registry_data(str(reference))
        except docker.errors.APIError as exc:
            raise _pull_failure(ref, exc) from None
        digest = reference.digest or data.id
        if not any(
            p.get("os") == PLATFORM[0] and p.get("architecture") == PLATFORM[1]
            for p in data.attrs.get("Platforms") or [{}]
        ):
            offered = ", ".join(f"{p.get('os')}/{p.get('architecture')}" for p in data.attrs.get("Platforms") or [])
            raise ImageError(f"{ref!r} offers {offered or 'no platform'}; the server runs linux/amd64 images")
        # Layer count and unpacked size are checked at the registry first; the daemon then
        # pulls exactly the manifest checked (its digest, not the tag or an index).
        digest = check_link(
            reference.registry,
            reference.path,
            digest,
            ref=ref,
            secure=registry_is_secure(client, reference.registry),
            max_bytes=max_bytes,
            deadline=deadline,
            timeout=timeout,
        ).digest
        pinned_repo = f"{reference.repository}@{digest}"
        announced: dict[str, int] = {}
        try:
            for event in client.api.pull(
                reference.repository, tag=digest, stream=True, decode=True, platform="linux/amd64"
            ):
                if "error" in event:
                    raise ImageError(f"cannot pull {ref!r}: {str(event['error'])[:300]}")
                total = (event.get("progressDetail") or {}).get("total")
                if event.get("status") == "Downloading" and total:
                    announced[event.get("id", "")] = int(total)
                    if sum(announced.values()) > max_bytes:
                        _remove_quietly(client, pinned_repo)
                        raise ImageError(
                            f"{ref!r} is over the {max_bytes} byte image cap (its layers alone are larger); the pull was stopped"
                        )
                if time.monotonic() > deadline:
                    raise ImageError(
                        f"pulling {ref!r} took longer than {timeout:g} s (the pull time-out); the pull was stopped"
                    )
        except docker.errors.APIError as exc:
            raise _pull_failure(ref, exc) from None
        except requests.RequestException:
            raise ImageError(
                f"pulling {ref!r} took longer than {timeout:g} s (the pull time-out) or the registry stopped answering"
            ) from None
        info = inspect_image(pinned_repo, client=client)
        if info.size > max_bytes:
            _remove_quietly(client, pinned_repo)
            raise ImageError(f"{ref!r} is {info.size} bytes; the image cap is {max_bytes} bytes")
        if (info.os, info.architecture) != PLATFORM:
            raise ImageError(f"the image is for {info.os}/{info.architecture}; the server runs linux/amd64 images")
        pinned = f"{reference.repository}{':' + reference.tag if reference.tag else ''}@{digest}"
        return info, pinned
    except requests.RequestException:
        raise ImageError(
            f"the registry behind {ref!r} did not answer within {timeout:g} s (the pull time-out)"
        ) from None
    except docker.errors.DockerException as exc:  # not an APIError: the daemon itself failed
        raise PlatformError(f"the container platform failed while pulling: {type(exc).__name__}") from None
    finally:
        client.close()  # an aborted pull's stream is dropped, so the daemon cancels it
