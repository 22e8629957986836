"""The images a daemon holds, so intake can take back exactly what a refused submission brought
in (an archive it loaded, an image it pulled) and nothing that was there before."""

from __future__ import annotations

from docker.errors import APIError, ImageNotFound

import docker
from harness.sandbox.runner import docker_client

__all__ = ["image_ids", "remove_image", "untag"]


def image_ids(*, client: docker.DockerClient | None = None) -> frozenset[str]:
    """The ids (``sha256:…``) of every image on the daemon, intermediate ones included."""
    client = client or docker_client()
    return frozenset(image.id for image in client.images.list(all=True))


def remove_image(image_id: str, *, client: docker.DockerClient | None = None) -> bool:
    """Remove ``image_id`` with every tag naming it; False when it is gone already or a
    container still uses it (then it stays: nothing that runs is pulled from under it)."""
    client = client or docker_client()
    try:
        client.images.remove(image_id, force=True)
    except ImageNotFound:
        return False
    except APIError as exc:
        if exc.status_code == 409:  # in use by a container
            return False
        raise
    return True


def untag(ref: str, *, client: docker.DockerClient | None = None) -> bool:
    """Remove the name ``ref`` from its image, never the image itself: False (and nothing
    removed) when it is the image's only name, or gone already."""
    client = client or docker_client()
    try:
        if len(client.images.get(ref).tags) < 2:
            return False
        client.images.remove(ref)
    except ImageNotFound:
        return False
    return True
