"""Atomic HDF5 writes and streamed file hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py

__all__ = ["HASH_BLOCK_BYTES", "atomic_hdf5", "file_sha256"]

#: Read size of :func:`file_sha256`.
HASH_BLOCK_BYTES = 1 << 20
#: Files are served to participants and mounted read-only into non-root containers.
_FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Write an HDF5 file at ``path`` all-or-nothing.

    The file is written to a temporary name in the same directory (so the final rename
    stays on one filesystem), flushed and fsynced, then ``os.replace``-d over ``path``. If
    the body raises, the temporary file is removed and ``path`` is left untouched: a reader
    never sees a half-written file.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            yield f
        os.chmod(tmp, _FILE_MODE)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in :data:`HASH_BLOCK_BYTES` blocks (constant memory)."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()
