"""Python script submissions: a single ``.py`` file or a zip with a ``main.py`` (design §3, §5).

A script runs as ``python3 /submission/main.py`` in the reference base image (numpy, scipy,
h5py, scikit-image; nothing is installed at run time), under the same sandbox as an image:
it reads ``/input/measurement.h5`` and writes ``/output/result.h5``. Its files are unpacked
on the host into a directory bound read-only at :data:`MOUNT_POINT`.

An archive is checked before anything is written, from its central directory, and again
while it is unpacked (declared sizes can lie):

- at most :attr:`ScriptLimits.max_entries` entries and :attr:`ScriptLimits.max_total_bytes`
  uncompressed in all;
- overall compression ratio at most :attr:`ScriptLimits.max_ratio` (a zip bomb has ~1000:1);
- names relative, ``/``-separated, without ``..``, empty parts, backslashes or control
  characters, and unique;
- regular files and directories only (no symlinks, devices or fifos, judged from the Unix
  mode bits), not encrypted;
- a ``main.py`` at the top level.

Every failure is a :class:`~harness.errors.ImageError` (outcome ``image_invalid``) whose
message names the broken rule.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import ImageError

__all__ = [
    "ENTRY_POINT",
    "MOUNT_POINT",
    "ScriptLimits",
    "check_script",
    "script_command",
    "script_kind",
    "unpack_script",
]

MOUNT_POINT = "/submission"
ENTRY_POINT = "main.py"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries, an empty zip
_CHUNK = 2**16
_MAX_NAME = 255
_MAX_DEPTH = 16


@dataclass(frozen=True)
class ScriptLimits:
    """Caps on a script submission; the upload itself is capped before this (the API's)."""

    max_entries: int = 1000
    max_total_bytes: int = 64 * 2**20
    #: Total uncompressed / total compressed size; text compresses ~3-10×, bombs ~1000×.
    max_ratio: float = 100.0
    #: A lone ``.py`` file larger than this is refused.
    max_source_bytes: int = 4 * 2**20


def script_kind(path: str | os.PathLike) -> str:
    """``"zip"`` or ``"py"``, from the file's first bytes (never from its name)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return "zip" if head in _ZIP_MAGIC else "py"


def _check_source(path: Path, limits: ScriptLimits) -> None:
    size = path.stat().st_size
    if size == 0:
        raise ImageError("the script is empty; upload a .py file (or a zip with a main.py)")
    if size > limits.max_source_bytes:
        raise ImageError(
            f"the script is {size} bytes; a single .py file may be at most {limits.max_source_bytes} bytes (zip larger projects)"
        )
    data = path.read_bytes()
    if b"\0" in data:
        raise ImageError("the upload is neither a zip archive nor a Python source file (it contains NUL bytes)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImageError(f"the script is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _check_name(name: str) -> PurePosixPath:
    shown = name[:80]
    if not name or len(name) > _MAX_NAME:
        raise ImageError(f"the archive has an entry with an empty or over-long name ({shown!r})")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
        raise ImageError(f"the archive entry {shown!r} has a backslash or a control character in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ImageError(f"the archive entry {shown!r} has an absolute path; zip the files with relative names")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ImageError(
            f"the archive entry {shown!r} has an empty, '.' or '..' path component; names must stay inside the archive"
        )
    if len(parts) > _MAX_DEPTH:
        raise ImageError(f"the archive entry {shown!r} is nested deeper than {_MAX_DEPTH} directories")
    return PurePosixPath(*parts)


def _entry_type(info: zipfile.ZipInfo) -> str:
    """``"file"`` or ``"dir"``; anything else (symlink, device, fifo, socket) is refused."""
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # Unix mode bits are meaningful
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise ImageError(f"the archive entry {info.filename[:80]!r} is a symbolic link; include the file itself")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ImageError(f"the archive entry {info.filename[:80]!r} is not a regular file or directory")
        if kind == stat.S_IFDIR:
            return "dir"
    return "dir" if info.filename.endswith("/") else "file"


def _checked_entries(
    zf: zipfile.ZipFile, path: Path, limits: ScriptLimits
) -> list[tuple[zipfile.ZipInfo, PurePosixPath, str]]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise ImageError(f"the archive has {len(infos)} entries; the limit is {limits.max_entries}")
    seen: set[PurePosixPath] = set()
    entries = []
    total = 0
    for info in infos:
        name = _check_name(info.filename)
        kind = _entry_type(info)
        if info.flag_bits & 0x1:
            raise ImageError(f"the archive entry {info.filename[:80]!r} is encrypted; upload an unencrypted zip")
        if name in seen:
            raise ImageError(f"the archive has two entries named {str(name)[:80]!r}")
        seen.add(name)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ImageError(f"the archive unpacks to more than {limits.max_total_bytes} bytes (the cap)")
        entries.append((info, name, kind))
    compressed = max(path.stat().st_size, 1)
    if total / compressed > limits.max_ratio:
        raise ImageError(
            f"the archive expands {total / compressed:.0f}-fold ({compressed} → {total} bytes); "
            f"the limit is {limits.max_ratio:g}-fold (a zip bomb?)"
        )
    files = {name for _, name, kind in entries if kind == "file"}
    if PurePosixPath(ENTRY_POINT) not in files:
        tops = sorted({n.parts[0] for n in files})[:5]
        hint = f" (it holds {', '.join(tops)})" if tops else " (it holds no files)"
        raise ImageError(
            f"the archive has no {ENTRY_POINT} at its top level{hint}; zip the files themselves, not their folder"
        )
    for name in files:  # a file that is also another entry's directory
        for parent in name.parents:
            if parent in files:
                raise ImageError(f"the archive uses {str(parent)!r} as both a file and a directory")
    return entries


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ImageError(f"the zip archive is damaged or unsupported: {exc}") from None


def check_script(path: str | os.PathLike, limits: ScriptLimits = ScriptLimits()) -> str:
    """Check a script upload without unpacking it; returns ``"py"`` or ``"zip"``.

    Raises :class:`ImageError` naming the broken rule (see the module docstring).
    """
    path = Path(path)
    kind = script_kind(path)
    if kind == "py":
        _check_source(path, limits)
        return kind
    with _open_zip(path) as zf:
        _checked_entries(zf, path, limits)
    return kind


def _copy_capped(src, dest: Path, *, cap: int, name: str) -> int:
    """Copy at most ``cap`` bytes; a stream longer than its declared size is refused."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise ImageError(f"the archive entry {name[:80]!r} unpacks to more than it declares")
            out.write(chunk)
    return written


def unpack_script(path: str | os.PathLike, dest: str | os.PathLike, limits: ScriptLimits = ScriptLimits()) -> Path:
    """Check ``path`` and lay it out under ``dest`` (created; must not exist) as files for
    :data:`MOUNT_POINT`: ``main.py`` for a lone script, the archive's tree for a zip.

    Files are 0644 and directories 0755, so the sandbox's unprivileged user can read them.
    On any error ``dest`` is removed and :class:`ImageError` raised.
    """
    path, dest = Path(path), Path(dest)
    dest.mkdir(mode=0o755)
    try:
        if script_kind(path) == "py":
            _check_source(path, limits)
            shutil.copyfile(path, dest / ENTRY_POINT)
            os.chmod(dest / ENTRY_POINT, 0o644)
        else:
            _unpack_zip(path, dest, limits)
        os.chmod(dest, 0o755)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _unpack_zip(path: Path, dest: Path, limits: ScriptLimits) -> None:
    with _open_zip(path) as zf:
        entries = _checked_entries(zf, path, limits)
        budget = limits.max_total_bytes
        for info, name, kind in entries:
            target = dest.joinpath(*name.parts)
            # Parents are made here with fixed modes: the archive's own modes are ignored.
            for parent in reversed(name.parents[:-1] if len(name.parts) > 1 else []):
                d = dest.joinpath(*parent.parts)
                if not d.is_dir():
                    d.mkdir(mode=0o755)
            if kind == "dir":
                if not target.is_dir():
                    target.mkdir(mode=0o755)
                continue
            try:
                with zf.open(info) as src:
                    budget -= _copy_capped(src, target, cap=min(info.file_size, budget), name=info.filename)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise ImageError(f"the archive entry {info.filename[:80]!r} cannot be unpacked: {exc}") from None
            except FileExistsError:
                raise ImageError(f"the archive has two entries named {info.filename[:80]!r}") from None
            os.chmod(target, 0o644)


def script_command() -> list[str]:
    """What the base image runs: the unpacked ``main.py``, unbuffered so a traceback is logged."""
    return ["python3", "-u", f"{MOUNT_POINT}/{ENTRY_POINT}"]
