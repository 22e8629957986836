"""Image intake: check a ``docker save`` archive before the daemon loads it."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker

from harness.errors import ImageError
from harness.sandbox.model import ImageInfo
from harness.sandbox.runner import PLATFORM, docker_client, inspect_image

__all__ = ["check_image_archive", "load_image_archive", "RESERVED_PREFIXES"]

_MAX_JSON = 2**20  # manifest and config are small; a huge one is hostile
_SAVE_HINT = "create it with `docker save IMAGE -o image.tar`"
#: Image names the platform itself uses; an upload may not claim them even before they exist.
RESERVED_PREFIXES = ("edx-arena/", "edx-arena-test/")


@dataclass(frozen=True)
class _Archive:
    config: dict
    #: ``sha256:<hex>`` of the config JSON: the id the daemon will give the loaded image.
    image_id: str
    tags: tuple[str, ...]


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ImageError(f"the archive has no {name}; {_SAVE_HINT}") from None
    if not member.isfile() or member.size > _MAX_JSON:
        raise ImageError(f"{name} in the archive is not a small regular file")
    return tar.extractfile(member).read()


def _json(data: bytes, name: str) -> object:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ImageError(f"{name} in the archive is not valid JSON") from None


def _read_archive(path: str | os.PathLike, *, max_bytes: int) -> _Archive:
    size = os.stat(path).st_size
    if size > max_bytes:
        raise ImageError(f"the image archive is {size} bytes; the cap is {max_bytes} bytes")
    if not tarfile.is_tarfile(path):
        raise ImageError(f"the upload is not a tar archive; {_SAVE_HINT}")
    try:
        with tarfile.open(path) as tar:
            manifest = _json(_member_bytes(tar, "manifest.json"), "manifest.json")
            if not isinstance(manifest, list) or len(manifest) != 1:
                count = len(manifest) if isinstance(manifest, list) else "no"
                raise ImageError(f"the archive holds {count} images; submit exactly one")
            entry = manifest[0] if isinstance(manifest[0], dict) else {}
            config_name = entry.get("Config")
            if not isinstance(config_name, str):
                raise ImageError("manifest.json names no image config")
            raw_config = _member_bytes(tar, config_name)
    except tarfile.TarError as exc:
        raise ImageError(f"the tar archive is damaged: {exc}") from None
    config = _json(raw_config, config_name)
    tags = entry.get("RepoTags") or []
    if not isinstance(config, dict) or not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ImageError("the archive's manifest or image config is malformed; " + _SAVE_HINT)
    return _Archive(config=config, image_id="sha256:" + hashlib.sha256(raw_config).hexdigest(), tags=tuple(tags))


def _checked_archive(path: str | os.PathLike, *, max_bytes: int) -> _Archive:
    archive = _read_archive(path, max_bytes=max_bytes)
    platform = (archive.config.get("os"), archive.config.get("architecture"))
    if platform != PLATFORM:
        raise ImageError(f"the image is for {platform[0]}/{platform[1]}; the server runs linux/amd64 images")
    return archive


def check_image_archive(path: str | os.PathLike, *, max_bytes: int) -> dict:
    """Validate a docker-save archive without loading it; returns its image config.

    Rules: size ≤ ``max_bytes``; a tar; ``manifest.json`` lists exactly one image; its config
    says linux/amd64. Raises :class:`ImageError` naming the broken rule.
    """
    return _checked_archive(path, max_bytes=max_bytes).config


def _refuse_taken_tags(client: docker.DockerClient, archive: _Archive) -> None:
    """Loading re-points the archive's tags: refuse a tag that names another image here.

    Otherwise an upload tagged like the reference runner, or like another participant's
    image, would silently replace what that name runs.
    """
    for tag in archive.tags:
        try:
            current = client.images.get(tag).id
        except docker.errors.ImageNotFound:
            current = None
        if current is None and tag.startswith(RESERVED_PREFIXES):
            raise ImageError(f"the archive is tagged {tag!r}, a name reserved for the platform's own images; tag your image with a name of your own and save it again")
        if current is not None and current != archive.image_id:
            raise ImageError(
                f"the archive is tagged {tag!r}, a name another image on the server already has; "
                "tag your image with a name of your own (docker tag IMAGE yourname/solver:v1) and save it again"
            )


def load_image_archive(path: str | os.PathLike, *, max_bytes: int, client: docker.DockerClient | None = None) -> ImageInfo:
    """Check, then load a docker-save archive into the daemon; returns the loaded image.

    Every failure is an :class:`ImageError` with a message for the participant.
    """
    archive = _checked_archive(path, max_bytes=max_bytes)
    client = client or docker_client(timeout=600)
    _refuse_taken_tags(client, archive)
    with open(Path(path), "rb") as f:
        try:
            images = client.images.load(f)
        except docker.errors.APIError as exc:
            raise ImageError(f"the daemon refused the archive: {exc.explanation or exc}") from None
    if len(images) != 1:
        raise ImageError(f"the archive loaded {len(images)} images; submit exactly one")
    info = inspect_image(images[0].id, client=client)
    if info.id != archive.image_id:
        raise ImageError("the loaded image does not match the archive's config; " + _SAVE_HINT)
    return info
