"""Reading untrusted HDF5 safely: size cap, opening, the link/storage walk, bounded reads.

Every check here looks at metadata only (file size, link types, dataset creation property
lists, declared shapes) and runs before any dataset element is read, so a hostile file is
rejected without decompressing anything. Data is then read block by block (one chunk, or a
row slab of a contiguous dataset, at a time), so memory stays bounded by
:data:`MAX_CHUNK_BYTES` whatever the file declares.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, overload

import h5py
import numpy as np

from harness.errors import FileTooLargeError, FormatError

__all__ = [
    "ALLOWED_FILTERS",
    "MAX_CHUNK_BYTES",
    "MAX_DEPTH",
    "MAX_OBJECTS",
    "MISSING",
    "SCENE_ID_PATTERN",
    "SLAB_BYTES",
    "check_readable_dataset",
    "check_size",
    "check_tree",
    "count_nonfinite",
    "human_bytes",
    "iter_blocks",
    "open_hdf5",
    "read_attr",
    "read_float_attr",
    "read_int_attr",
    "read_string_attr",
    "reading_errors",
    "require_dataset",
    "require_group",
    "show_name",
]

#: Links visited by the whole-file walk before the file is rejected as implausible.
MAX_OBJECTS = 10_000
#: Group nesting depth beyond which the file is rejected.
MAX_DEPTH = 32
#: Largest chunk (uncompressed bytes) a dataset we read may declare: a chunk is the unit
#: HDF5 decompresses, so this bounds the memory one read can take.
MAX_CHUNK_BYTES = 16 << 20
#: Block size for reading contiguous (unchunked) datasets.
SLAB_BYTES = 4 << 20
#: HDF5 filter id → name of the filters a dataset we read may use.
ALLOWED_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "gzip",
    h5py.h5z.FILTER_SHUFFLE: "shuffle",
    h5py.h5z.FILTER_LZF: "lzf",
}
_KNOWN_FILTERS = {
    h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    h5py.h5z.FILTER_SZIP: "szip",
    h5py.h5z.FILTER_NBIT: "nbit",
    h5py.h5z.FILTER_SCALEOFFSET: "scaleoffset",
}
#: Scene ids are group names and appear in URLs, logs and database rows.
SCENE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Longest ``where`` kept on an error: object names are chosen by the uploader.
_MAX_WHERE = 200
#: Largest attribute (elements) we read: every attribute of the format is a scalar or a pair.
_MAX_ATTR_ELEMENTS = 64


def human_bytes(n: int) -> str:
    """``1536 → '1.5 KiB'``: sizes in messages, binary units."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def show_name(name: str | bytes, *, limit: int = 64) -> str:
    """A participant-chosen name, quoted and truncated, safe to put in a message."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "…'"


def check_size(path: str | os.PathLike, max_bytes: int | None) -> int:
    """``os.stat`` the file (never opening it) and apply the size cap; returns the size.

    A missing file raises :class:`FileNotFoundError`: a stored file that vanished is a
    platform failure, not something the sender can fix."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file", os.fspath(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise FormatError("the upload is not a regular file", rule="not_hdf5")
    if max_bytes is not None and st.st_size > max_bytes:
        raise FileTooLargeError(
            f"the file is {human_bytes(st.st_size)} ({st.st_size} bytes), over the "
            f"{human_bytes(max_bytes)} limit; store only what the format asks for, "
            "compressed with gzip if needed"
        )
    return st.st_size


@contextlib.contextmanager
def reading_errors(where: str, *, attribute: str | None = None) -> Iterator[None]:
    """Turn libhdf5/h5py failures while reading ``where`` (or its ``attribute``) into a
    user-facing FormatError.

    Corrupt chunks, unsupported datatypes and truncated files surface as OSError,
    ValueError, TypeError, KeyError or RuntimeError from h5py. A failed allocation inside
    libhdf5 becomes MemoryError, which is left alone so the isolated validator can report
    it as a resource failure rather than blame the file's format.
    """
    try:
        yield
    except FormatError:
        raise
    except OSError as exc:
        # libhdf5 reports a failed malloc as an error stack, which h5py raises as OSError:
        # that is a resource limit, not a property of the file's format.
        if "memory allocation failed" in str(exc).lower():
            raise MemoryError(str(exc)) from None
        raise _unreadable(where, attribute, exc) from None
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise _unreadable(where, attribute, exc) from None


def _unreadable(where: str, attribute: str | None, exc: Exception) -> FormatError:
    what = where if attribute is None else f"{where} attribute {attribute!r}"
    return FormatError(
        f"{what} could not be read (corrupt or unsupported HDF5 content: "
        f"{type(exc).__name__}); re-write it with h5py or the reference writer",
        where=where,
        rule="unreadable",
        attribute=attribute,
    )


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open read-only without file locking (uploads sit on shared volumes), or reject.

    An empty file, a text file and a file with no HDF5 signature are "not an HDF5 file";
    a file with a signature that libhdf5 cannot open (truncated, corrupt superblock) is
    rejected with the same message and the reason. A missing file is not a format problem
    of the sender's: it raises :class:`FileNotFoundError` (an ``OSError``, which the services
    treat as a platform failure).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    try:
        signature = h5py.is_hdf5(path)
    except (OSError, ValueError):
        signature = False
    if not signature:
        raise FormatError(
            "not an HDF5 file (no HDF5 signature found); write the file with h5py or another HDF5 library",
            rule="not_hdf5",
        )
    try:
        f = h5py.File(path, "r", locking=False)
    except (OSError, ValueError) as exc:
        raise FormatError(
            "not an HDF5 file: it has an HDF5 signature but libhdf5 cannot open it "
            f"(truncated or corrupt: {type(exc).__name__}); upload the complete file",
            rule="not_hdf5",
        ) from None
    try:
        yield f
    finally:
        f.close()


def _join(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def _check_dataset_storage(dsid: h5py.h5d.DatasetID, where: str) -> None:
    plist = dsid.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise FormatError(
            f"{where} is a virtual dataset (it maps data from other datasets or files); write the values themselves",
            where=where,
            rule="virtual",
        )
    if plist.get_external_count() > 0:
        raise FormatError(
            f"{where} keeps its data in external raw files; store the data inside the HDF5 file",
            where=where,
            rule="external_storage",
        )


def check_tree(f: h5py.File) -> None:
    """Walk every link of the file without following any; reject the unsafe ones.

    Rejects soft, external and user-defined links anywhere (a hard link is the only kind
    that cannot point outside the file or change what a path means), virtual datasets and
    datasets with external raw storage anywhere, more than :data:`MAX_OBJECTS` links and
    nesting deeper than :data:`MAX_DEPTH`. Hard-link cycles are visited once.
    """
    visited: set[tuple[int, int]] = set()
    seen = 0
    stack: list[tuple[h5py.h5g.GroupID, str, int]] = [(f.id, "/", 0)]
    with reading_errors("the file's group structure"):
        while stack:
            gid, path, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise FormatError(
                    f"{path} is nested more than {MAX_DEPTH} groups deep; flatten the file",
                    where=path,
                    rule="too_many_objects",
                )
            seen += gid.get_num_objs()
            if seen > MAX_OBJECTS:
                raise FormatError(
                    f"the file holds more than {MAX_OBJECTS} objects; a result needs one "
                    "group and one dataset per scene",
                    rule="too_many_objects",
                )
            for raw in gid:
                name = raw.decode("utf-8", "replace")
                where = _join(path, name)
                kind = gid.links.get_info(raw).type
                if kind == h5py.h5l.TYPE_SOFT:
                    raise FormatError(
                        f"{show_name(where)} is a soft link; links are not allowed, store the "
                        "object itself at that path",
                        where=where[:_MAX_WHERE],
                        rule="link",
                    )
                if kind == h5py.h5l.TYPE_EXTERNAL:
                    raise FormatError(
                        f"{show_name(where)} is an external link to another file; links are "
                        "not allowed, store the data inside this file",
                        where=where[:_MAX_WHERE],
                        rule="link",
                    )
                if kind != h5py.h5l.TYPE_HARD:
                    raise FormatError(
                        f"{show_name(where)} is a user-defined link (class {kind}); links are not allowed",
                        where=where[:_MAX_WHERE],
                        rule="link",
                    )
                info = h5py.h5o.get_info(gid, raw)
                key = (info.fileno, info.addr)
                if key in visited:
                    continue
                visited.add(key)
                if info.type == h5py.h5o.TYPE_GROUP:
                    stack.append((h5py.h5g.open(gid, raw), where, depth + 1))
                elif info.type == h5py.h5o.TYPE_DATASET:
                    _check_dataset_storage(h5py.h5d.open(gid, raw), where)


def check_readable_dataset(dset: h5py.Dataset, where: str) -> None:
    """Metadata checks for a dataset whose values we will read.

    Only gzip, lzf and shuffle filters (no checksums, lossy or plugin filters whose
    decoders we do not ship), no external/virtual storage, and chunks no larger than
    :data:`MAX_CHUNK_BYTES` uncompressed.
    """
    with reading_errors(where):
        _check_dataset_storage(dset.id, where)
        plist = dset.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code in ALLOWED_FILTERS:
                continue
            label = _KNOWN_FILTERS.get(code, f"unknown filter id {code}")
            raise FormatError(
                f"{where} uses the {label} filter; only gzip, lzf and shuffle are allowed, "
                "re-write it with compression='gzip' (optionally shuffle=True)",
                where=where,
                rule="filter",
            )
        if dset.chunks is not None:
            chunk_bytes = math.prod(dset.chunks) * dset.dtype.itemsize
            if chunk_bytes > MAX_CHUNK_BYTES:
                raise FormatError(
                    f"{where} declares chunks {tuple(dset.chunks)} of {human_bytes(chunk_bytes)} "
                    f"each; chunks may be at most {human_bytes(MAX_CHUNK_BYTES)}, use smaller "
                    "chunks (e.g. one element map per chunk)",
                    where=where,
                    rule="chunk_size",
                )


def _slabs(shape: tuple[int, ...], itemsize: int, limit: int) -> Iterator[tuple]:
    if not shape:
        yield ()
        return
    # Split along the first axis whose trailing block fits the budget.
    for axis in range(len(shape)):
        inner = math.prod(shape[axis + 1 :]) * itemsize
        if inner <= limit:
            break
    step = max(1, limit // max(inner, 1))
    for index in itertools.product(*(range(n) for n in shape[:axis])):
        for start in range(0, shape[axis], step):
            yield (*index, slice(start, min(start + step, shape[axis])))


def iter_blocks(dset: h5py.Dataset, where: str) -> Iterator[np.ndarray]:
    """The dataset's values, one chunk (chunked) or one row slab (contiguous) at a time.

    Call :func:`check_readable_dataset` first: it bounds the chunk size.
    """
    if dset.size == 0:
        return
    if dset.chunks is not None:
        selections = dset.iter_chunks()
    else:
        selections = _slabs(dset.shape, dset.dtype.itemsize, SLAB_BYTES)
    for sel in selections:
        with reading_errors(where):
            block = dset[sel]
        yield block


def count_nonfinite(dset: h5py.Dataset, where: str) -> int:
    """Number of NaN/±inf values, read block by block."""
    return sum(int(block.size - np.count_nonzero(np.isfinite(block))) for block in iter_blocks(dset, where))


def require_group(parent: h5py.Group, name: str, where: str, *, fix: str) -> h5py.Group:
    """``parent[name]`` if it is a group, else a FormatError naming ``where``."""
    with reading_errors(where):
        if name not in parent:
            raise FormatError(f"{where} is missing; {fix}", where=where, rule="missing")
        obj = parent[name]
    if not isinstance(obj, h5py.Group):
        raise FormatError(
            f"{where} must be a group, not a {type(obj).__name__.lower()}; {fix}", where=where, rule="missing"
        )
    return obj


def require_dataset(parent: h5py.Group, name: str, where: str, *, fix: str) -> h5py.Dataset:
    """``parent[name]`` if it is a dataset, else a FormatError naming ``where``."""
    with reading_errors(where):
        if name not in parent:
            raise FormatError(f"{where} is missing; {fix}", where=where, rule="missing")
        obj = parent[name]
    if not isinstance(obj, h5py.Dataset):
        raise FormatError(
            f"{where} must be a dataset, not a {type(obj).__name__.lower()}; {fix}", where=where, rule="missing"
        )
    return obj


#: Returned by :func:`read_attr` for an absent attribute.
MISSING = object()


def read_attr(obj: h5py.HLObject, name: str, where: str) -> object:
    """An attribute's value, or :data:`MISSING`; refuses attributes with more than a few elements.

    The element count is read from the attribute's dataspace before its data, so a huge
    attribute is rejected without loading it. (A variable-length string's length is only
    known by reading it; the isolated validator's memory limit covers that case.)
    """
    with reading_errors(where, attribute=name):
        if name not in obj.attrs:
            return MISSING
        aid = obj.attrs.get_id(name)
        if aid.shape is not None and math.prod(aid.shape) > _MAX_ATTR_ELEMENTS:
            raise FormatError(
                f"{where} attribute {name!r} has shape {aid.shape}; it must be a scalar",
                where=where,
                rule="attribute",
                attribute=name,
            )
        return obj.attrs[name]


def _scalar(value: object) -> np.ndarray:
    arr = np.asarray(value)
    return arr.reshape(()) if arr.size == 1 else arr


@overload
def read_string_attr(obj: h5py.HLObject, name: str, where: str, *, required: Literal[True] = ...) -> str: ...
@overload
def read_string_attr(obj: h5py.HLObject, name: str, where: str, *, required: bool) -> str | None: ...
def read_string_attr(obj: h5py.HLObject, name: str, where: str, *, required: bool = True) -> str | None:
    """A string attribute (UTF-8 or ASCII, fixed or variable length)."""
    value = read_attr(obj, name, where)
    if value is MISSING:
        if required:
            raise FormatError(f"{where} has no {name!r} attribute", where=where, rule="attribute", attribute=name)
        return None
    value = _scalar(value)
    if value.dtype.kind == "O" or (value.dtype.kind in "SU" and value.ndim == 0):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise FormatError(f"{where} attribute {name!r} must be a string", where=where, rule="attribute", attribute=name)
    return value


@overload
def read_int_attr(obj: h5py.HLObject, name: str, where: str, *, required: Literal[True] = ...) -> int: ...
@overload
def read_int_attr(obj: h5py.HLObject, name: str, where: str, *, required: bool) -> int | None: ...
def read_int_attr(obj: h5py.HLObject, name: str, where: str, *, required: bool = True) -> int | None:
    """An integer attribute (an integral float such as 1.0 is accepted)."""
    value = read_attr(obj, name, where)
    if value is MISSING:
        if required:
            raise FormatError(f"{where} has no {name!r} attribute", where=where, rule="attribute", attribute=name)
        return None
    arr = _scalar(value)
    if arr.ndim == 0 and arr.dtype.kind in "iu":
        return int(arr)
    if arr.ndim == 0 and arr.dtype.kind == "f" and np.isfinite(arr) and float(arr).is_integer():
        return int(arr)
    raise FormatError(f"{where} attribute {name!r} must be an integer", where=where, rule="attribute", attribute=name)


def read_float_attr(obj: h5py.HLObject, name: str, where: str, *, fix: str = "") -> float:
    """A required real, finite scalar attribute (integers are accepted, booleans are not)."""
    value = read_attr(obj, name, where)
    suffix = f"; {fix}" if fix else ""
    if value is MISSING:
        raise FormatError(f"{where} has no {name!r} attribute{suffix}", where=where, rule="attribute", attribute=name)
    arr = _scalar(value)
    if arr.ndim != 0 or arr.dtype.kind not in "iuf":
        got = "a string" if arr.dtype.kind in "OSU" else f"{arr.dtype} with shape {arr.shape}"
        raise FormatError(
            f"{where} attribute {name!r} must be one real number (got {got}){suffix}",
            where=where,
            rule="attribute",
            attribute=name,
        )
    number = float(arr)
    if not math.isfinite(number):
        raise FormatError(
            f"{where} attribute {name!r} is {number}; it must be finite{suffix}",
            where=where,
            rule="nonfinite",
            attribute=name,
        )
    return number


def check_format_version(f: h5py.File, expected: int) -> None:
    """The root ``format_version`` attribute must equal ``expected`` (both file formats)."""
    version = read_int_attr(f, "format_version", "/", required=False)
    if version != expected:
        found = "no 'format_version' attribute" if version is None else f"format_version {version}"
        raise FormatError(
            f"the root group has {found}; this server reads format_version = {expected}",
            where="/",
            rule="format_version",
        )
