"""The tar reader follows Go's archive/tar (what the daemon uses), not Python's tarfile, where
the two disagree; and it never spends more than linear time or constant memory."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from harness.sandbox.tarscan import StreamSource, TarRefused, TooLarge, scan_layer, walk


def _tar(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes], fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            info, data = e if isinstance(e, tuple) else (e, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info(name: str, kind=tarfile.REGTYPE, link: str = "", pax: dict | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.pax_headers = kind, link, pax or {}
    return info


def _walk(data: bytes, max_entries: int = 100) -> list:
    return list(walk(StreamSource(io.BytesIO(data).read), max_entries=max_entries))


def _header(name: str, size: int, typeflag: bytes) -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name.encode()
    block[100:108] = b"0000644\0"
    block[124:136] = f"{size:011o}\0".encode()
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def test_names_sizes_and_links_as_go_reads_them():
    long = "d/" * 80 + "file"  # over 100 characters: a PAX path record
    data = _tar(
        (_info("a/b"), b"hello"),
        _info("dir", tarfile.DIRTYPE),
        _info("ln", tarfile.SYMTYPE, "a/b"),
        (_info(long), b"x"),
    )
    entries = _walk(data)
    assert [(e.name, e.kind, e.size, e.linkname) for e in entries] == [
        ("a/b", "file", 5, ""),
        ("dir/", "dir", 0, ""),  # Go keeps the slash
        ("ln", "symlink", 0, "a/b"),
        (long, "file", 1, ""),
    ]
    assert data[entries[0].offset : entries[0].offset + 5] == b"hello"


def test_a_pax_global_header_is_ignored_like_go_does():
    """Python's tarfile applies a global ``path``/``size`` to every later member; Go returns the
    header as a member of its own and the daemon ignores it. A global ``size=0`` would make
    Python read file data as headers."""
    records = b"10 size=0\n"
    data = _header("pax_global_header", len(records), b"g") + records.ljust(512, b"\0") + _tar((_info("f"), b"12345"))
    assert [(e.name, e.size) for e in _walk(data)] == [("f", 5)]


def test_the_size_of_a_header_only_type_is_ignored_like_go_does():
    """Go ignores the size field of links, directories and devices: the next block is a header."""
    block = bytearray(_header("ln", 1024, b"2"))
    data = bytes(block) + _tar((_info("f"), b"data"))
    assert [(e.name, e.kind) for e in _walk(data)] == [("ln", "symlink"), ("f", "file")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_tar((_info("s", pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}), b"x")), "sparse file"),
        (_tar((_info("s", pax={"GNU.sparse.numblocks": "1", "GNU.sparse.offset": "0"}), b"x")), "sparse file"),
        (_header("s", 0, b"S"), r"sparse file \(type S\)"),
        (_header("x", 12, b"X") + b"12 path=abc\n".ljust(512, b"\0"), "Solaris extended header"),
        (_header("x", 2**20 + 1, b"x"), "extension header is 1048577 bytes"),
        (_header("f", 4096, b"0") + b"short", "truncated"),
        (_tar((_info("f"), b"x")) + b"junk", "data after its end-of-archive marker"),
        (bytes(512) + _tar((_info("f"), b"x")), "data after its end-of-archive marker"),
        (_header("f", 0, b"0")[:148] + b"0000000\0" + _header("f", 0, b"0")[156:], "bad header checksum"),
    ],
    ids=[
        "pax-sparse-1.0",
        "pax-sparse-0.0",
        "gnu-sparse",
        "solaris",
        "huge-pax",
        "truncated",
        "junk",
        "zero-block",
        "checksum",
    ],
)
def test_refused(data, message):
    with pytest.raises(TarRefused, match=message):
        _walk(data)


def test_entries_are_capped():
    data = _tar(*[_info(f"e{i}") for i in range(50)])
    with pytest.raises(TarRefused, match="more than 10 entries"):
        _walk(data, max_entries=10)


def test_crafted_pax_records_take_linear_time():
    """``"2 2 2 …"``: CPython 3.11's regex parser is quadratic on this; Go refuses it (a record
    is at least 5 bytes); so does this reader, at once."""
    records = b"2 " * (2**19)
    data = _header("././@PaxHeader", len(records), b"x") + records + bytes(-len(records) % 512)
    started = time.monotonic()
    with pytest.raises(TarRefused, match="PAX header is malformed"):
        _walk(data)
    assert time.monotonic() - started < 0.5


def test_a_layer_is_scanned_unpacked_with_its_diff_id():
    import hashlib

    plain = _tar((_info("f"), b"x" * 1000))
    for blob in (plain, gzip.compress(plain)):
        scan = scan_layer(io.BytesIO(blob).read, max_unpacked=2**20, max_entries=10)
        assert scan.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
        assert scan.unpacked_bytes == len(plain) and scan.entries == 1


def test_a_gzip_bomb_layer_stops_at_the_cap_in_constant_memory():
    import tracemalloc
    import zlib

    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = _header("zeros", 512 * 2**20, b"0")
    blob = gz.compress(head) + b"".join(gz.compress(bytes(2**20)) for _ in range(512)) + gz.flush()
    assert len(blob) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match="unpacks to more than 8388608 bytes"):
            scan_layer(io.BytesIO(blob).read, max_unpacked=8 * 2**20, max_entries=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


def test_a_layer_compressed_twice_is_refused():
    plain = _tar((_info("f"), b"x"))
    with pytest.raises(TarRefused, match=r"compressed twice \(gzip, then gzip\)"):
        scan_layer(io.BytesIO(gzip.compress(gzip.compress(plain))).read, max_unpacked=2**20, max_entries=10)
