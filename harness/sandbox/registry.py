"""An image link, read at its registry before the daemon pulls it.

The daemon checks a pulled image's size only once every layer is on its disk, unpacked: a
gzip layer of a few kilobytes can unpack to terabytes, and a manifest can list hundreds of
layers. So before any pull the linux/amd64 manifest is fetched (by digest, checked against
it), its layers are counted and their announced sizes summed, and every layer blob is
streamed once and unpacked in memory-bounded chunks (:func:`~harness.sandbox.tarscan.scan_layer`):
at most the image cap unpacked, no sparse files, each blob matching its digest and its
diff ID. The daemon then pulls that very manifest by digest, so it gets the bytes checked
here (blobs are content-addressed). The price is that each layer crosses the network twice.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import time
import warnings
from dataclasses import dataclass

import requests
import urllib3

import docker
from harness.errors import ImageError
from harness.sandbox.runner import PLATFORM
from harness.sandbox.tarscan import MAX_LAYER_ENTRIES, MAX_LAYERS, TarRefused, TooLarge, scan_layer

__all__ = ["CheckedLink", "check_link", "registry_is_secure"]

_MAX_MANIFEST = 4 * 2**20  # the daemon's own limit for a manifest
_MAX_CONFIG = 2**20
_CHUNK = 2**20
_IMAGE_MANIFESTS = frozenset(
    {"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"}
)
_INDEXES = frozenset(
    {"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json"}
)
_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar",
    }
)
_ACCEPT = ", ".join(sorted(_IMAGE_MANIFESTS | _INDEXES))
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: Docker Hub's API is not served at its name.
_API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}


class _TimedOut(Exception):
    pass


class _Broken(Exception):
    """The registry's connection failed in the middle of a body."""


def registry_is_secure(client: docker.DockerClient, registry: str) -> bool:
    """The daemon's own answer (``docker info``): a registry it treats as insecure (by name,
    or by an address in its insecure CIDRs, 127.0.0.0/8 by default) may speak plain HTTP."""
    config = client.info().get("RegistryConfig") or {}
    index = (config.get("IndexConfigs") or {}).get(registry)
    if index is not None:
        return bool(index.get("Secure", True))
    if registry.startswith("["):  # [v6 address]:port
        host = registry[1 : registry.find("]")]
    else:
        host = registry.rsplit(":", 1)[0]
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(a[4][0]) for a in socket.getaddrinfo(host, None)}
        except (OSError, ValueError):
            return True
    networks = []
    for cidr in config.get("InsecureRegistryCIDRs") or []:
        try:
            networks.append(ipaddress.ip_network(cidr))
        except ValueError:
            continue
    return not any(a in n for a in addresses for n in networks)


class _Registry:
    """Anonymous reads from one registry (the bearer-token dance included), each bounded by
    the pull's deadline; bodies are read raw (``Accept-Encoding: identity``) so what is
    hashed is what the registry stores."""

    def __init__(self, registry: str, path: str, *, secure: bool, deadline: float) -> None:
        self.host = _API_HOSTS.get(registry.lower(), registry)
        self.path, self.secure, self.deadline = path, secure, deadline
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": "edx-arena", "Accept-Encoding": "identity"})
        self.base: str | None = None
        self.token: str | None = None

    def close(self) -> None:
        self.session.close()

    def timeout(self) -> tuple[float, float]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut
        return (min(left, 10.0), min(left, 30.0))

    def _send(self, url: str, headers: dict[str, str] | None = None, *, stream: bool = False) -> requests.Response:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return self.session.get(url, headers=headers, timeout=self.timeout(), stream=stream, verify=self.secure)

    def _connect(self) -> str:
        if self.base is None:
            schemes = ("https",) if self.secure else ("https", "http")
            for i, scheme in enumerate(schemes):
                try:
                    self._send(f"{scheme}://{self.host}/v2/").close()
                except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
                    if i == len(schemes) - 1:
                        raise
                    continue
                self.base = f"{scheme}://{self.host}"
                break
        assert self.base is not None  # the last scheme either answered or raised
        return self.base

    def get(self, what: str, *, accept: str | None = None) -> requests.Response:
        url = f"{self._connect()}/v2/{self.path}/{what}"
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            response = self._send(url, headers, stream=True)
            if response.status_code == 401 and attempt == 0 and self._authenticate(response):
                response.close()
                continue
            return response
        return response

    def _authenticate(self, response: requests.Response) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            return False
        params.setdefault("scope", f"repository:{self.path}:pull")
        answer = self.session.get(realm, params=params, timeout=self.timeout(), stream=True)
        try:
            if answer.status_code != 200:
                return False
            body = _read_capped(answer, _MAX_CONFIG, self.deadline)
        finally:
            answer.close()
        if body is None:  # over the cap: not a token a registry would send
            return False
        try:
            token = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return False
        value = token.get("token") or token.get("access_token") if isinstance(token, dict) else None
        if not isinstance(value, str) or not value:
            return False
        self.token = value
        return True


def _raw_read(response: requests.Response, n: int) -> bytes:
    try:
        return response.raw.read(n, decode_content=False)
    except urllib3.exceptions.ReadTimeoutError:
        raise _TimedOut from None
    except (urllib3.exceptions.HTTPError, OSError):
        raise _Broken from None


def _read_capped(response: requests.Response, limit: int, deadline: float) -> bytes | None:
    data = bytearray()
    while chunk := _raw_read(response, min(_CHUNK, limit + 1 - len(data))):
        data += chunk
        if len(data) > limit:
            return None
        if time.monotonic() > deadline:
            raise _TimedOut
    return bytes(data)


@dataclass(frozen=True)
class CheckedLink:
    #: The linux/amd64 image manifest's digest: what to pull and pin.
    digest: str
    layers: int
    compressed_bytes: int
    unpacked_bytes: int


def _refuse(ref: str, why: str) -> ImageError:
    return ImageError(f"cannot pull {ref!r}: {why}")


def _fetch(reg: _Registry, ref: str, what: str, digest: str, limit: int, *, accept: str | None = None):
    """A manifest or a small blob, checked against its digest; returns ``(bytes, content type)``."""
    response = reg.get(what, accept=accept)
    try:
        if response.status_code != 200:
            raise _refuse(ref, f"the registry answered HTTP {response.status_code} for {what.split('/')[0]} {digest}")
        body = _read_capped(response, limit, reg.deadline)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    finally:
        response.close()
    if body is None:
        raise _refuse(ref, f"{what.split('/')[0]} {digest} is over {limit} bytes")
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise _refuse(ref, f"the registry sent {what.split('/')[0]} {digest} with other content (digest mismatch)")
    return body, content_type


def _json(body: bytes, ref: str, what: str) -> dict:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise _refuse(ref, f"its {what} is not a JSON object")
    return doc


def _descriptor(d: object, ref: str, what: str) -> tuple[str, int, str]:
    if not isinstance(d, dict):
        raise _refuse(ref, f"its manifest has a malformed {what} entry")
    digest, size, media = d.get("digest"), d.get("size"), d.get("mediaType", "")
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise _refuse(ref, f"its manifest names a {what} by a digest other than sha256 ({str(digest)[:80]!r})")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _refuse(ref, f"its manifest gives a {what} no valid size")
    if d.get("urls"):  # a foreign (Windows) layer: nothing this server runs
        raise _refuse(ref, f"its manifest has a {what} to be fetched from outside the registry (urls)")
    return digest, size, str(media)


def _image_manifest(reg: _Registry, ref: str, digest: str) -> tuple[str, dict]:
    """The linux/amd64 image manifest under ``digest`` (itself, or picked from an index)."""
    for _ in range(2):
        body, content_type = _fetch(reg, ref, f"manifests/{digest}", digest, _MAX_MANIFEST, accept=_ACCEPT)
        doc = _json(body, ref, "manifest")
        media = doc.get("mediaType") or content_type
        if doc.get("schemaVersion") != 2:
            raise _refuse(ref, "its manifest is not schema 2 (an old format); push it again with a current Docker")
        if media in _IMAGE_MANIFESTS:
            return digest, doc
        if media not in _INDEXES:
            raise _refuse(ref, f"its manifest has the media type {str(media)[:100]!r}, not an image manifest")
        candidates = [
            m
            for m in doc.get("manifests") or []
            if isinstance(m, dict)
            and isinstance(m.get("platform"), dict)
            and (m["platform"].get("os"), m["platform"].get("architecture")) == PLATFORM
        ]
        if not candidates:
            raise ImageError(f"{ref!r} offers no linux/amd64 image; the server runs linux/amd64 images")
        candidates.sort(key=lambda m: m["platform"].get("variant") not in (None, "", "v1"))
        digest, _, _ = _descriptor(candidates[0], ref, "platform manifest")
    raise _refuse(ref, "its index points at another index; push a plain image manifest")


def check_link(
    registry: str,
    path: str,
    digest: str,
    *,
    ref: str,
    secure: bool,
    max_bytes: int,
    deadline: float,
    timeout: float,
) -> CheckedLink:
    """Check the image ``registry/path@digest`` for linux/amd64 against the caps without the
    daemon; returns the image manifest's digest to pull. Raises :class:`ImageError` (for the
    participant) naming the rule; network failures are re-raised (``requests`` exceptions)."""
    reg = _Registry(registry, path, secure=secure, deadline=deadline)
    try:
        digest, manifest = _image_manifest(reg, ref, digest)
        config_digest, config_size, _ = _descriptor(manifest.get("config"), ref, "config")
        layers = manifest.get("layers")
        if not isinstance(layers, list):
            raise _refuse(ref, "its manifest lists no layers")
        if len(layers) > MAX_LAYERS:
            raise _refuse(ref, f"the image has {len(layers)} layers; the limit is {MAX_LAYERS} (squash some)")
        described = [_descriptor(layer, ref, "layer") for layer in layers]
        for _, _, media in described:
            if media not in _LAYERS:
                raise _refuse(ref, f"a layer has the media type {media[:100]!r}; the server takes tar or gzip layers")
        compressed = sum(size for _, size, _ in described)
        if compressed > max_bytes:
            raise ImageError(
                f"{ref!r} is over the {max_bytes} byte image cap (its layers alone are larger); the pull was stopped"
            )
        if config_size > _MAX_CONFIG:
            raise _refuse(ref, f"its image config is {config_size} bytes; the limit is {_MAX_CONFIG}")
        body, _ = _fetch(reg, ref, f"blobs/{config_digest}", config_digest, _MAX_CONFIG)
        config = _json(body, ref, "image config")
        platform = (config.get("os"), config.get("architecture"))
        if platform != PLATFORM:
            raise ImageError(f"the image is for {platform[0]}/{platform[1]}; the server runs linux/amd64 images")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(described):
            raise _refuse(ref, "its image config and manifest list different numbers of layers")
        unpacked = files = 0
        scanned: dict[str, tuple[int, int, str]] = {}
        for i, (layer_digest, size, _) in enumerate(described):
            if layer_digest not in scanned:
                scanned[layer_digest] = _scan_blob(
                    reg, ref, layer_digest, size, i, len(described), max_bytes, max_bytes - unpacked, files
                )
            layer_unpacked, layer_files, diff_id = scanned[layer_digest]
            unpacked += layer_unpacked
            files += layer_files
            if unpacked > max_bytes:
                raise _too_large(ref, max_bytes)
            if files > MAX_LAYER_ENTRIES:
                raise _refuse(ref, f"its layers hold more than {MAX_LAYER_ENTRIES} files")
            if diff_id != diff_ids[i]:
                raise _refuse(ref, f"layer {i + 1} does not match the image config's diff ID; the image is damaged")
        return CheckedLink(digest, len(described), compressed, unpacked)
    except _TimedOut:
        raise ImageError(
            f"pulling {ref!r} took longer than {timeout:g} s (the pull time-out); the pull was stopped"
        ) from None
    except _Broken:
        raise _refuse(ref, "the registry's connection broke while it was sending the image") from None
    finally:
        reg.close()


def _too_large(ref: str, max_bytes: int) -> ImageError:
    return ImageError(
        f"{ref!r} unpacks to more than the {max_bytes} byte image cap; the pull was stopped before the daemon unpacked it"
    )


def _scan_blob(
    reg: _Registry, ref: str, digest: str, size: int, i: int, n: int, max_bytes: int, budget: int, files: int
) -> tuple[int, int, str]:
    response = reg.get(f"blobs/{digest}")
    try:
        if response.status_code != 200:
            raise _refuse(ref, f"the registry answered HTTP {response.status_code} for layer {i + 1} of {n}")
        sha, count = hashlib.sha256(), 0

        def read(k: int) -> bytes:
            nonlocal count
            if time.monotonic() > reg.deadline:
                raise _TimedOut
            data = _raw_read(response, min(k, size + 1 - count))
            count += len(data)
            if count > size:
                raise TarRefused("the registry sent more bytes than the manifest announces")
            sha.update(data)
            return data

        try:
            scan = scan_layer(read, max_unpacked=budget, max_entries=MAX_LAYER_ENTRIES - files)
            while read(_CHUNK):  # the unpacked stream ended; the blob must end too
                pass
        except TooLarge:
            raise _too_large(ref, max_bytes) from None
        except TarRefused as exc:
            raise _refuse(ref, f"layer {i + 1} of {n} is refused: {exc}") from None
    finally:
        response.close()
    if count != size or "sha256:" + sha.hexdigest() != digest:
        raise _refuse(ref, f"the registry sent layer {i + 1} of {n} with other content than its digest")
    return scan.unpacked_bytes, scan.entries, scan.diff_id
