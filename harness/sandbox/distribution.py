"""Images travel to compute hosts through the server's own registry (Docker Distribution).

The server pushes an accepted image under its namespace and records the reference pinned by
manifest digest (:func:`push_image`); a compute host pulls exactly that digest, checks that the
image it got is the one the server accepted (same content-addressed id) and keeps a bounded
cache of such images (:class:`ImageCache`). A registry the daemon reaches on loopback needs no
TLS (Docker treats 127.0.0.0/8 as insecure by default); any other address must be listed in the
daemon's ``insecure-registries`` or served with TLS.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from docker.errors import APIError, DockerException, ImageNotFound

import docker
from harness.errors import PlatformError
from harness.sandbox.runner import docker_client

__all__ = ["REPOSITORY", "ImageCache", "pull_pinned", "push_image"]

#: The repository under the registry's prefix that holds every accepted image, tagged by id.
REPOSITORY = "edx-arena-sub"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _repository(registry: str) -> str:
    return f"{registry.strip().rstrip('/')}/{REPOSITORY}"


def push_image(image_id: str, *, registry: str, client: docker.DockerClient | None = None) -> str:
    """Push the daemon's image ``image_id`` to ``registry`` (``host:port[/prefix]``); returns
    ``host:port[/prefix]/edx-arena-sub@sha256:…``, the reference pinned by manifest digest.

    The tag is the image id, so one image is pushed once whoever submits it. A failure is a
    :class:`PlatformError` (the registry is the platform's)."""
    client = client or docker_client(timeout=600)
    repository, tag = _repository(registry), image_id.removeprefix("sha256:")
    try:
        client.api.tag(image_id, repository, tag)
        digest = None
        for event in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise PlatformError(f"the image registry refused the image: {str(event['error'])[:200]}")
            aux = event.get("aux") or {}
            if _DIGEST.fullmatch(str(aux.get("Digest", ""))):
                digest = aux["Digest"]
    except (APIError, DockerException) as exc:
        raise PlatformError(f"could not push the image to the registry {registry}: {type(exc).__name__}") from None
    finally:
        try:  # the registry's name on the server's daemon is only the push's vehicle
            client.api.remove_image(f"{repository}:{tag}", noprune=True)
        except DockerException:
            pass
    if digest is None:
        raise PlatformError(f"the registry {registry} did not report a manifest digest for the image")
    return f"{repository}@{digest}"


def pull_pinned(ref: str, *, image_id: str, client: docker.DockerClient | None = None) -> str:
    """Pull ``ref`` (``repository@sha256:…``) unless the daemon has ``image_id`` already; check
    the image pulled is ``image_id`` (the registry or the network cannot swap it: the manifest
    digest pins the config, whose digest is the id). Returns ``image_id``."""
    client = client or docker_client(timeout=600)
    repository, _, digest = ref.partition("@")
    if not _DIGEST.fullmatch(digest) or not _DIGEST.fullmatch(image_id):
        raise PlatformError(f"the server sent an image reference not pinned by digest: {ref[:200]!r}")
    try:
        try:
            if client.images.get(image_id).id == image_id:
                return image_id
        except ImageNotFound:
            pass
        client.api.pull(repository, tag=digest)
        got = client.images.get(ref).id
    except (APIError, DockerException) as exc:
        raise PlatformError(f"could not pull the image from the server's registry: {type(exc).__name__}") from None
    if got != image_id:
        _remove(client, ref)
        raise PlatformError(f"the registry served image {got[:19]} for {ref}, not {image_id[:19]}; refused")
    return image_id


def _remove(client: docker.DockerClient, ref: str) -> None:
    try:
        client.images.remove(ref, force=True)
    except DockerException:
        pass


class ImageCache:
    """The images a compute host pulled, least recently used removed past ``size``.

    The use times live in ``path`` (JSON), so the bound holds across restarts. An image in use
    by a running container is kept (the daemon refuses to remove it) and tried again later.
    """

    def __init__(self, path: Path, *, size: int) -> None:
        self.path, self.size = Path(path), size

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self, used: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(used))
        os.replace(tmp, self.path)

    def use(self, ref: str, *, image_id: str, client: docker.DockerClient | None = None) -> str:
        """Pull (if needed) and verify ``ref``, note its use and evict the oldest beyond the bound."""
        client = client or docker_client(timeout=600)
        pull_pinned(ref, image_id=image_id, client=client)
        used = self._load()
        used[ref] = time.time()
        for old in sorted(used, key=used.__getitem__)[: max(len(used) - self.size, 0)]:
            try:
                client.images.remove(old, force=False)
                del used[old]
            except ImageNotFound:
                del used[old]
            except DockerException:  # in use: kept for now
                pass
        self._save(used)
        return image_id
