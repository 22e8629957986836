"""Image intake: check a ``docker save`` archive before the daemon loads it, or pull an image
link from an allow-listed registry (:func:`pull_image`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

import docker
from harness.errors import ImageError, PlatformError
from harness.sandbox.model import ImageInfo
from harness.sandbox.runner import PLATFORM, docker_client, inspect_image

__all__ = [
    "RESERVED_PREFIXES",
    "ImageReference",
    "check_image_archive",
    "load_image_archive",
    "parse_reference",
    "pull_image",
    "registry_of",
]

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
            raise ImageError(
                f"the archive is tagged {tag!r}, a name reserved for the platform's own images; tag your image with a name of your own and save it again"
            )
        if current is not None and current != archive.image_id:
            raise ImageError(
                f"the archive is tagged {tag!r}, a name another image on the server already has; "
                "tag your image with a name of your own (docker tag IMAGE yourname/solver:v1) and save it again"
            )


def load_image_archive(
    path: str | os.PathLike, *, max_bytes: int, client: docker.DockerClient | None = None
) -> ImageInfo:
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
    repo = f"{reference.registry.lower()}/{reference.path}"
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
    ``registry/path:tag@sha256:…``. The image must offer linux/amd64, be at most ``max_bytes``
    (announced layer sizes abort the pull early; the pulled image's size is checked at the
    end) and arrive within ``timeout`` seconds. Every failure is an :class:`ImageError`
    (outcome ``image_invalid``) with a message for the participant.
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
