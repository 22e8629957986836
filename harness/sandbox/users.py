"""Which user an image's ``USER`` really runs as, resolved the way Docker does it.

Docker's daemon turns ``Config.User`` into ids with runc's ``libcontainer/user``
(``GetExecUser``, read at moby v20.10.24), using the container's own ``/etc/passwd`` and
``/etc/group``. A string test for ``root``/``0`` misses what that code accepts: ``00``,
``+0``, ``000:0``, ``65534:0``, or a name whose passwd entry has uid 0 (``toor``), or a
uid of 2³² that the daemon truncates to 0. So :func:`resolve_user` follows the same rules:

* ``USER`` is ``user[:group]``; parts after a second ``:`` are ignored.
* A part is a number when Go's ``strconv.Atoi`` takes it (ASCII digits, an optional sign: so
  ``00`` and ``+0`` are 0); a number is always an id, even if a name like it exists.
* A name is looked up in ``/etc/passwd`` (lines trimmed, first match wins; a field that is not
  a number reads as 0), a group name in ``/etc/group``; an unknown name is an error.
* Without ``:group`` the group is the passwd entry's, or 0 when the uid has no entry.

Then the sandbox refuses uid 0 and gid 0 however spelled, refuses ids outside
1 … 2³¹ − 1, and runs the container as the resolved numbers, ``"uid:gid"``. Numeric and
explicit, that string means the same ids to the daemon whatever the image's files say, and
it drops the supplementary groups ``/etc/group`` would add (one of them could be group 0).
One deliberate difference: a numeric ``USER`` with no passwd entry and no group gets group
65534 (``nogroup``) instead of Docker's implicit 0.

The files are read without running the image: :func:`read_user_files` creates a container
that is never started and copies them out of it with the archive API, each capped in size.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile

from docker.utils import decode_json_header

import docker
from harness.errors import ImageError

__all__ = ["USER_FILE_BYTES", "read_user_files", "resolve_user"]

#: Largest /etc/passwd or /etc/group read from an image.
USER_FILE_BYTES = 1 << 20
#: Go's bufio.Scanner stops at a longer line, and with it the daemon's lookup.
_LINE_BYTES = 64 * 1024
_ID_MAX = 2**31 - 1
_NOGROUP = 65534
_INT64 = 2**63
_GO_INT = re.compile(r"[+-]?[0-9]+")
_FIX = "set a non-root USER in the Dockerfile with a numeric uid and gid (e.g. USER 65534:65534)"


def _atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi`` on a 64-bit platform: the value, or ``None`` where Go errs."""
    if not _GO_INT.fullmatch(text):  # no spaces, underscores or non-ASCII digits, unlike int()
        return None
    value = int(text)
    return value if -_INT64 <= value < _INT64 else None


def _field_int(text: str) -> int:
    """A passwd/group id field as runc reads it: conversion errors ignored (0), overflow clamped."""
    if not _GO_INT.fullmatch(text):
        return 0
    return max(-_INT64, min(int(text), _INT64 - 1))


def _lines(text: str, name: str) -> list[str]:
    lines = text.split("\n")
    if any(len(line.encode("utf-8", "surrogateescape")) > _LINE_BYTES for line in lines):
        raise ImageError(f"the image's {name} has a line longer than 64 KiB; the server cannot resolve USER from it")
    return [line.removesuffix("\r") for line in lines]  # bufio.ScanLines drops one \r before \n


def _passwd(text: str) -> list[tuple[str, int, int]]:
    entries = []
    for line in _lines(text, "/etc/passwd"):
        line = line.strip()
        if not line:
            continue
        fields = line.split(":") + [""] * 4
        entries.append((fields[0], _field_int(fields[2]), _field_int(fields[3])))
    return entries


def _group(text: str) -> list[tuple[str, int]]:
    entries = []
    for line in _lines(text, "/etc/group"):
        if not line:  # runc does not trim group lines
            continue
        fields = line.split(":") + [""] * 3
        entries.append((fields[0], _field_int(fields[2])))
    return entries


def resolve_user(spec: str, *, passwd: str | None, group: str | None) -> tuple[int, int]:
    """The ``(uid, gid)`` the sandbox runs an image whose ``USER`` is ``spec`` as.

    ``passwd`` and ``group`` are the image's ``/etc/passwd`` and ``/etc/group`` (``None``
    when it has none). Raises :class:`ImageError` when the user or group is root (0, in
    any spelling), unknown, or out of range.
    """
    shown = spec or "(none)"
    parts = spec.split(":")
    user_arg, group_arg = parts[0], parts[1] if len(parts) > 1 else ""
    if user_arg == "":  # the daemon's default user
        raise ImageError(f"the image's USER {shown} runs as uid 0 (root); {_FIX}")
    uid_arg, gid_arg = _atoi(user_arg), _atoi(group_arg)
    users = _passwd(passwd) if passwd is not None else []
    if uid_arg is not None:
        match = next((u for u in users if u[1] == uid_arg), None)
    else:
        match = next((u for u in users if u[0] == user_arg), None)
    if match is not None:
        uid, gid = match[1], match[2]
    elif uid_arg is not None:
        uid, gid = uid_arg, _NOGROUP if group_arg == "" else 0
    else:
        raise ImageError(f"the image's USER {user_arg!r} is not in its /etc/passwd; {_FIX}")
    if group_arg != "":
        groups = _group(group) if group is not None else []
        if gid_arg is not None:
            found = next((g for g in groups if g[1] == gid_arg), None)
        else:
            found = next((g for g in groups if g[0] == group_arg), None)
        if found is not None:
            gid = found[1]
        elif gid_arg is not None:
            gid = gid_arg
        else:
            raise ImageError(f"the image's USER group {group_arg!r} is not in its /etc/group; {_FIX}")
    if uid == 0 or gid == 0:
        what = "uid 0 (root)" if uid == 0 else "group 0 (root)"
        raise ImageError(f"the image's USER {shown} runs as {what}; {_FIX}")
    if not (0 < uid <= _ID_MAX and 0 < gid <= _ID_MAX):
        raise ImageError(
            f"the image's USER {shown} resolves to uid {uid}, gid {gid}: ids must be 1 to {_ID_MAX}; {_FIX}"
        )
    return uid, gid


def read_user_files(
    client: docker.DockerClient, image: str, *, labels: dict[str, str], tmpfs: dict[str, str]
) -> tuple[str | None, str | None]:
    """The image's ``/etc/passwd`` and ``/etc/group`` (``None`` where absent), read from a
    container that is created, never started, and removed with its volumes. ``tmpfs`` is the
    run's own (one over each declared VOLUME), so that creating it makes no anonymous volume
    either, and a VOLUME over a file cannot fail the create as a platform error.

    Refused (:class:`ImageError`): a file over :data:`USER_FILE_BYTES`, or one that is not a
    regular file (the daemon would follow a symbolic link inside the image; we do not guess).
    """
    probe = client.containers.create(
        image, entrypoint=["/.edx-arena-never-started"], command=[], network_mode="none", labels=labels, tmpfs=tmpfs
    )
    try:
        return _read_file(client, probe.id, "/etc/passwd"), _read_file(client, probe.id, "/etc/group")
    finally:
        probe.remove(force=True, v=True)


def _read_file(client: docker.DockerClient, container_id: str, path: str) -> str | None:
    # The low-level call, because its response must be closed however we stop reading: the
    # daemon holds the container while it streams, and an abandoned stream would block the
    # probe's removal until the client's time-out (the SDK's get_archive returns a bare generator).
    api = client.api
    response = api._get(api._url("/containers/{0}/archive", container_id), params={"path": path}, stream=True)
    with contextlib.closing(response):
        if response.status_code == 404:
            return None
        api._raise_for_status(response)
        info = decode_json_header(response.headers.get("X-Docker-Container-Path-Stat", "")) or {}
        if info.get("linkTarget") or int(info.get("size", 0)) > USER_FILE_BYTES:
            raise ImageError(
                f"the image's {path} is a link or larger than {USER_FILE_BYTES} bytes; make it a small regular file"
            )
        data = bytearray()
        for chunk in response.iter_content(64 * 1024):  # a tar of one member: the file, a header, padding
            data += chunk
            if len(data) > USER_FILE_BYTES + 64 * 1024:
                raise ImageError(f"the image's {path} is larger than {USER_FILE_BYTES} bytes")
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as tar:
        member = tar.next()
        if member is None or not member.isreg() or member.size > USER_FILE_BYTES:
            raise ImageError(f"the image's {path} is not a regular file of at most {USER_FILE_BYTES} bytes")
        extracted = tar.extractfile(member)
        assert extracted is not None  # a regular file, checked above
        content = extracted.read()
    return content.decode("utf-8", "surrogateescape")
