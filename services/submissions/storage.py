"""Where uploads go: streamed to disk with a cap and a sha256, kept under the submission's id
once it is recorded, removed when it is not."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from core.settings import get_settings
from services.errors import StorageError, TooLargeError
from services.metrics import record_upload

__all__ = ["CHUNK_BYTES", "discard", "keep", "stream_to_disk", "uploads_dir"]

CHUNK_BYTES = 2**20


def uploads_dir() -> Path:
    return get_settings().storage_dir / "uploads"


def stream_to_disk(source: BinaryIO, *, directory: Path, max_bytes: int) -> tuple[Path, str, int]:
    """Copy ``source`` to a new temp file in ``directory`` in 1 MiB chunks, with a cap and a sha256.

    Memory stays constant whatever the size. Past the cap, or when the disk is full or
    unwritable, the partial file is removed before the error (413 / 507) is raised.

    Returns
    -------
    (path, sha256 hex digest, size in bytes)
    """
    digest = hashlib.sha256()
    size = 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, suffix=".upload")
    except OSError as exc:
        raise _storage_error(exc) from exc
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLargeError(f"the file is over the {max_bytes} byte upload cap")
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise _storage_error(exc) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    record_upload(size)
    return path, digest.hexdigest(), size


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
        return StorageError("the server could not store the upload (storage full or unwritable); nothing was recorded")
    return exc


def keep(path: Path, *, name: str) -> Path:
    """Move an accepted upload to its final name in the uploads folder (same file system)."""
    final = uploads_dir() / name
    os.replace(path, final)
    return final


def discard(*paths: str | Path | None) -> None:
    """Remove stored files of a submission that was not recorded."""
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)
