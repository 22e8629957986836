"""Hostile image archives and layers, built from scratch (shared by the intake tests).

A layer here is ``(blob, diff id)``: the blob as stored in an archive or a registry, the
diff ID being the sha256 of the unpacked tar, which the daemon checks."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib

__all__ = ["Zeros", "config_json", "image_archive", "members", "sparse_layer", "write_tar", "zeros_layer"]


def members(saved) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(saved) as src:
        return [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]


def write_tar(path, members):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as dst:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


class Zeros(io.RawIOBase):
    def __init__(self, n: int):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def config_json(diff_ids) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/busybox", "true"]},
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }
    ).encode()


def image_archive(path, layers: list[tuple[bytes, bytes | str]]):
    """A docker-save archive from scratch: ``layers`` are ``(blob, plain tar or its diff id)``."""
    diff_ids = [d if isinstance(d, str) else "sha256:" + hashlib.sha256(d).hexdigest() for _, d in layers]
    config = config_json(diff_ids)
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"l{i}/layer.tar" for i in range(len(layers))]
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": names}]).encode()
    members = [(tarfile.TarInfo("manifest.json"), manifest), (tarfile.TarInfo(config_name), config)]
    members += [(tarfile.TarInfo(n), blob) for n, (blob, _) in zip(names, layers)]
    return write_tar(path, members), "sha256:" + hashlib.sha256(config).hexdigest()


def zeros_layer(n: int) -> tuple[bytes, str]:
    """A gzip layer holding one file of ``n`` zero bytes: a few kB that unpack to ``n``."""
    info = tarfile.TarInfo("zeros")
    info.size = n
    head = info.tobuf(format=tarfile.PAX_FORMAT)
    tail = bytes(-n % 512) + bytes(1024)
    sha, gz = hashlib.sha256(head), zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [gz.compress(head)]
    chunk = bytes(2**20)
    for i in range(0, n, len(chunk)):
        part = chunk[: min(len(chunk), n - i)]
        sha.update(part)
        out.append(gz.compress(part))
    sha.update(tail)
    out += [gz.compress(tail), gz.flush()]
    return b"".join(out), "sha256:" + sha.hexdigest()


def sparse_layer(real_size: int) -> bytes:
    """A tar holding a PAX 1.0 sparse file: 4 kB of data that Go's reader unpacks to ``real_size``."""
    data = b"x" * 4096
    sparse_map = f"1\n{real_size - len(data)}\n{len(data)}\n".encode()
    sparse_map += bytes(-len(sparse_map) % 512)
    info = tarfile.TarInfo("GNUSparseFile.0/big")
    info.size = len(sparse_map) + len(data)
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "big",
        "GNU.sparse.realsize": str(real_size),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(sparse_map + data))
    return buf.getvalue()
