"""Image intake: check a ``docker save`` archive before the daemon loads it."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import docker

from harness.errors import ImageError
from harness.sandbox.model import ImageInfo
from harness.sandbox.runner import docker_client, inspect_image

_MAX_JSON = 2**20  # manifest and config are small; a huge one is hostile
PLATFORM = ("linux", "amd64")


def _json_member(tar: tarfile.TarFile, name: str) -> object:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise ImageError(f"the archive has no {name}; create it with `docker save IMAGE -o image.tar`") from None
    if not member.isfile() or member.size > _MAX_JSON:
        raise ImageError(f"{name} in the archive is not a small regular file")
    try:
        return json.load(tar.extractfile(member))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ImageError(f"{name} in the archive is not valid JSON") from None


def check_image_archive(path: str | os.PathLike, *, max_bytes: int) -> dict:
    """Validate a docker-save archive without loading it; returns its image config.

    Rules: size ≤ ``max_bytes``; a tar; ``manifest.json`` lists exactly one image; its config
    says linux/amd64.
    """
    size = os.stat(path).st_size
    if size > max_bytes:
        raise ImageError(f"the image archive is {size} bytes; the cap is {max_bytes} bytes")
    if not tarfile.is_tarfile(path):
        raise ImageError("the upload is not a tar archive; create it with `docker save IMAGE -o image.tar`")
    try:
        with tarfile.open(path) as tar:
            manifest = _json_member(tar, "manifest.json")
            if not isinstance(manifest, list) or len(manifest) != 1:
                count = len(manifest) if isinstance(manifest, list) else "no"
                raise ImageError(f"the archive holds {count} images; submit exactly one")
            config_name = manifest[0].get("Config") if isinstance(manifest[0], dict) else None
            if not isinstance(config_name, str):
                raise ImageError("manifest.json names no image config")
            config = _json_member(tar, config_name)
    except tarfile.TarError as exc:
        raise ImageError(f"the tar archive is damaged: {exc}") from None
    platform = (config.get("os"), config.get("architecture")) if isinstance(config, dict) else (None, None)
    if platform != PLATFORM:
        raise ImageError(f"the image is for {platform[0]}/{platform[1]}; the server runs linux/amd64 images")
    return config


def load_image_archive(path: str | os.PathLike, *, max_bytes: int, client: docker.DockerClient | None = None) -> ImageInfo:
    """Check, then load a docker-save archive into the daemon; returns the loaded image."""
    check_image_archive(path, max_bytes=max_bytes)
    client = client or docker_client(timeout=600)
    with open(Path(path), "rb") as f:
        try:
            images = client.images.load(f)
        except docker.errors.APIError as exc:
            raise ImageError(f"the daemon refused the archive: {exc.explanation or exc}") from None
    if len(images) != 1:
        raise ImageError(f"the archive loaded {len(images)} images; submit exactly one")
    return inspect_image(images[0].id, client=client)
