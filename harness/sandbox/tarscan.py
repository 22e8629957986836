"""Hostile tar streams, read the way Docker's daemon reads them, in constant memory.

The daemon parses tar with Go's ``archive/tar``; Python's ``tarfile`` disagrees with it on
details that matter here (it applies PAX global headers and Solaris ``X`` headers, treats a
bad header in mid-archive as the end, reads GNU sparse maps into memory, and its PAX parser
is quadratic on crafted records in this Python). Reading the same bytes with different rules
would let an archive show this checker one set of entries and the daemon another, so
:func:`walk` follows Go's reader (``archive/tar/reader.go``) and refuses whatever Go would
refuse, plus everything that expands on the daemon's disk beyond its bytes (sparse files).

:func:`scan_layer` reads one layer blob (plain tar or gzip/bzip2/xz, detected by the same
magic bytes as the daemon's ``archive.DetectCompression``) and bounds its unpacked bytes and
entries while streaming; its ``diff_id`` is what the daemon checks the layer against.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

__all__ = [
    "BLOCK",
    "MAX_LAYERS",
    "MAX_LAYER_ENTRIES",
    "FileSource",
    "LayerScan",
    "TarEntry",
    "TarRefused",
    "TooLarge",
    "compression",
    "decompressed",
    "is_tar_header",
    "scan_layer",
    "walk",
]

BLOCK = 512
#: Layers in one image: overlay2 stacks at most 128 lower directories.
MAX_LAYERS = 127
#: Files, directories and links in all layers of one image together (each is an inode on the
#: daemon's disk; a tar of empty entries costs 512 bytes apiece, so the byte cap alone allows
#: millions).
MAX_LAYER_ENTRIES = 1_000_000
#: Go's archive/tar reads PAX and GNU long-name records up to 1 MiB (maxSpecialFileSize).
MAX_SPECIAL = 2**20
_CHUNK = 2**20
#: Typeflags Go treats as header-only: their size field is ignored, no data follows.
_HEADER_ONLY = frozenset(b"123456")
_REGULAR = frozenset(b"07\0")

#: What the daemon sniffs (pkg/archive DetectCompression, 20.10), plus zstd for a clear message.
_MAGIC = (
    (b"BZh", "bzip2"),
    (b"\x1f\x8b\x08", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class TarRefused(Exception):
    """The stream breaks a rule; the message says which (a caller adds where)."""


class TooLarge(TarRefused):
    """The stream unpacks to more bytes than allowed."""


def compression(head: bytes) -> str | None:
    """The compression the daemon would detect from a stream's first bytes, or ``None``."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


@dataclass(frozen=True)
class TarEntry:
    """One member as Go's reader returns it (after PAX and GNU long-name records are applied)."""

    name: str
    linkname: str
    typeflag: str
    size: int
    #: Where the member's data starts in the stream.
    offset: int

    @property
    def kind(self) -> str:
        t = self.typeflag.encode("latin-1")[0]
        if t in _REGULAR:
            return "dir" if t == 0 and self.name.endswith("/") else "file"
        return {ord("1"): "hardlink", ord("2"): "symlink", ord("5"): "dir"}.get(t, "device" if t in b"346" else "other")


class _Source(Protocol):
    pos: int

    def read(self, n: int) -> bytes: ...

    def skip(self, n: int) -> None: ...


class FileSource:
    """A seekable file of known size: data is skipped by seeking."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size, self.pos = f, size, 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise TarRefused("the tar archive is truncated (a member's data runs past the end)")
        self.pos += n
        self.f.seek(self.pos)


class StreamSource:
    """A forward-only stream, read in large chunks (so a meter below counts everything, data
    skipped included, without a Python call per header)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read, self.pos = read, 0
        self._buf, self._off = b"", 0

    def _fill(self) -> bool:
        if self._off >= len(self._buf):
            self._buf, self._off = self._read(_CHUNK), 0
        return bool(self._buf)

    def read(self, n: int) -> bytes:
        parts = []
        while n and self._fill():
            part = self._buf[self._off : self._off + n]
            self._off += len(part)
            n -= len(part)
            parts.append(part)
        data = b"".join(parts)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> None:
        while n:
            if not self._fill():
                raise TarRefused("the tar archive is truncated (a member's data runs past the end)")
            k = min(n, len(self._buf) - self._off)
            self._off += k
            self.pos += k
            n -= k

    def unread(self, data: bytes) -> None:
        """Put back ``data``, just read."""
        self._buf, self._off = data + self._buf[self._off :], 0
        self.pos -= len(data)


def _string(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_OCTAL = re.compile(rb"[0-7]+")


def _octal(field: bytes) -> int:
    """Go's parseOctal: spaces and NULs around, up to the first NUL, octal digits only."""
    text = field.strip(b" \0").split(b"\0", 1)[0]
    if not text:
        return 0
    return int(text, 8) if _OCTAL.fullmatch(text) else _bad_number()


def _bad_number() -> int:
    raise TarRefused("a tar header has a malformed number")


def _numeric(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256, as Go's parseNumeric (negative when bit 6 is set)
        inv = 0xFF if field[0] & 0x40 else 0
        value = 0
        for i, c in enumerate(field):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if value >> 56:
                _bad_number()
            value = value << 8 | c
        if value >> 63:
            _bad_number()
        return ~value if inv else value
    return _octal(field)


_HIGH = bytes(range(128, 256))


def _checksum_ok(block: bytes) -> bool:
    """Go accepts the unsigned or the signed byte sum (the header's checksum field as spaces)."""
    stored = _octal(block[148:156])
    body = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(body)
    if stored == unsigned:
        return True
    high = len(body) - len(body.translate(None, _HIGH))
    return stored == unsigned - 256 * high


def is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is a tar header Go's reader accepts (a right checksum)."""
    if len(block) < BLOCK or block == bytes(BLOCK):
        return False
    try:
        return _checksum_ok(block[:BLOCK])
    except TarRefused:
        return False


def _pax_records(data: bytes) -> dict[str, str]:
    """Go's parsePAX: the whole record area must be ``"%d %s=%s\\n"`` records; linear time."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        if space < 0:
            raise TarRefused("a PAX header is malformed")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarRefused("a PAX header is malformed") from None
        end = pos + length
        if length < 5 or end > len(data) or data[end - 1 : end] != b"\n":
            raise TarRefused("a PAX header is malformed")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise TarRefused("a PAX header is malformed")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _padded(n: int) -> int:
    return -n % BLOCK


def walk(src: _Source, *, max_entries: int) -> Iterator[TarEntry]:
    """Members of the tar in ``src``; the caller may read a member's data before asking for the
    next one, else it is skipped. Ends at Go's end of archive (end of stream, or a zero block);
    everything after that must be zeros. Refuses: a bad checksum or number, a truncated
    member, a PAX or long-name record over 1 MiB, sparse files (GNU type ``S`` or
    ``GNU.sparse.*`` records: the daemon writes their holes out as zeros), and more than
    ``max_entries`` members."""
    pax: dict[str, str] = {}
    long_name = long_link = None
    count = 0
    while True:
        block = src.read(BLOCK)
        if not block:
            return
        if len(block) < BLOCK:
            raise TarRefused("the tar archive is truncated (it ends inside a header)")
        if block == bytes(BLOCK):
            _rest_is_zero(src)
            return
        if not _checksum_ok(block):
            raise TarRefused(f"the tar archive is damaged (bad header checksum at byte {src.pos - BLOCK})")
        typeflag = block[156:157] or b"\0"
        size = _numeric(block[124:136])
        if size < 0:
            raise TarRefused("a tar header declares a negative size")
        flag = typeflag[0]
        if flag in b"xgXLK" or flag == ord("S"):
            if flag == ord("S"):
                raise TarRefused("the tar holds a sparse file (type S); the daemon would write its holes out in full")
            if size > MAX_SPECIAL:
                raise TarRefused(f"a tar extension header is {size} bytes; the limit is {MAX_SPECIAL}")
            data = src.read(size)
            if len(data) < size:
                raise TarRefused("the tar archive is truncated (it ends inside an extension header)")
            src.skip(_padded(size))
            if flag in b"xg":  # Go parses a global header too (and then the daemon ignores it)
                records = _pax_records(data)
                pax = records if flag == ord("x") else pax
            elif flag == ord("L"):
                long_name = _string(data)
            elif flag == ord("K"):
                long_link = _string(data)
            elif flag == ord("X"):  # Go does not know Solaris headers: for it this is a plain member
                raise TarRefused("the tar holds a Solaris extended header (type X); use POSIX (PAX) headers")
            continue
        name = _string(block[0:100])
        linkname = _string(block[157:257])
        magic = block[257:263]
        if magic == b"ustar\0":
            prefix = _string(block[345:476] if block[508:512] == b"tar\0" else block[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        if any(k.startswith("GNU.sparse.") for k in pax):
            raise TarRefused(
                "the tar holds a sparse file (GNU.sparse PAX records); the daemon would write its holes out"
            )
        if "path" in pax:
            name = pax["path"]
        if "linkpath" in pax:
            linkname = pax["linkpath"]
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarRefused("a PAX size record is not a number") from None
            if size < 0:
                raise TarRefused("a PAX size record is negative")
        if long_name is not None:
            name = long_name
        if long_link is not None:
            linkname = long_link
        pax, long_name, long_link = {}, None, None
        count += 1
        if count > max_entries:
            raise TarRefused(f"the tar has more than {max_entries} entries")
        data_size = 0 if flag in _HEADER_ONLY else size
        entry = TarEntry(name, linkname, typeflag.decode("latin-1"), data_size, src.pos)
        yield entry
        consumed = src.pos - entry.offset
        if consumed > data_size:
            raise TarRefused("internal: read past a member's data")
        src.skip(data_size - consumed + _padded(data_size))


def _rest_is_zero(src: _Source) -> None:
    while data := src.read(_CHUNK):
        if data.count(0) != len(data):
            raise TarRefused("the tar has data after its end-of-archive marker")


class _Meter:
    """Counts, hashes and bounds the bytes read through it."""

    def __init__(self, read: Callable[[int], bytes], limit: int) -> None:
        self._read, self.limit, self.count = read, limit, 0
        self.sha = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self._read(n)
        self.count += len(data)
        if self.count > self.limit:
            raise _OverLimit
        self.sha.update(data)
        return data


class _OverLimit(Exception):
    pass


class _Prefixed:
    """A stream with its first bytes (already read to sniff them) put back in front."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self.head, self._read = head, read

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _CHUNK
        if self.head:
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self._read(n)


_OPENERS = {
    "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    "bzip2": lambda f: bz2.BZ2File(f, mode="rb"),
    "xz": lambda f: lzma.LZMAFile(f, mode="rb"),
}


def decompressed(read: Callable[[int], bytes]) -> tuple[str | None, Callable[[int], bytes]]:
    """``(compression, read)``: the stream as the daemon will unpack it (one level of
    gzip/bzip2/xz, by magic bytes). zstd is refused: this daemon (20.10) cannot read it."""
    head = b""
    while len(head) < 6:
        data = read(6 - len(head))
        if not data:
            break
        head += data
    kind = compression(head)
    raw = _Prefixed(head, read)
    if kind == "zstd":
        raise TarRefused("it is zstd-compressed, which this server's Docker cannot unpack; use gzip or none")
    if kind is None:
        return None, raw.read
    stream = _OPENERS[kind](raw)
    return kind, stream.read


@dataclass(frozen=True)
class LayerScan:
    #: ``sha256:<hex>`` of the unpacked tar: the daemon's diff ID for the layer.
    diff_id: str
    #: Bytes of the unpacked tar (what the daemon reads; its files are no larger).
    unpacked_bytes: int
    entries: int
    compression: str | None


def scan_layer(read: Callable[[int], bytes], *, max_unpacked: int, max_entries: int) -> LayerScan:
    """Read a layer blob to its end: at most ``max_unpacked`` bytes unpacked and
    ``max_entries`` members, no sparse files, nothing but zeros after the tar's end, and not
    compressed twice (the daemon unpacks one level only, and would read the inner stream as
    another compressed stream). Raises :class:`TarRefused`."""
    kind: str | None = None
    try:
        kind, unpacked = decompressed(read)
        meter = _Meter(unpacked, max_unpacked)
        src = StreamSource(meter.read)
        head = src.read(BLOCK)
        if kind is not None and compression(head) is not None:
            raise TarRefused(f"it is compressed twice ({kind}, then {compression(head)}); compress it once at most")
        src.unread(head)
        entries = 0
        for _ in walk(src, max_entries=max_entries):
            entries += 1
        while meter.read(_CHUNK):  # walk() checked the rest is zeros; this only makes sure it was all read
            pass
    except _OverLimit:
        raise TooLarge(f"it unpacks to more than {max_unpacked} bytes") from None
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise TarRefused(f"its {kind or 'compressed'} stream is damaged ({type(exc).__name__})") from None
    return LayerScan("sha256:" + meter.sha.hexdigest(), meter.count, entries, kind)
