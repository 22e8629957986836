"""Measure and remove a directory tree a participant made, without recursion.

Why not ``os.walk`` and ``shutil.rmtree``: on Python 3.11 both recurse, so about a thousand
nested directories in ``/output`` raise ``RecursionError``, and a deep path passes ``PATH_MAX``
long before that (``ENAMETOOLONG``). Both functions here work on directory file descriptors
(``*at`` system calls, names relative to an open directory), never follow a symbolic link, and
keep their state in a loop rather than on the call stack:

* :func:`output_excess` walks depth-first holding one descriptor per level, and stops as soon
  as the tree passes a cap (bytes, entries or depth), so its cost is bounded by the caps.
* :func:`remove_tree` needs no depth bound at all: it moves the contents of each directory up
  into the root, then removes the emptied directory, so it never holds more than two
  descriptors however deep the tree. A mode the sandbox user set (a directory of mode 000, a
  read-only file) does not stop it where the caller may change or ignore that mode (root, or
  the directory's owner).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from dataclasses import dataclass

from harness.sandbox.model import Outcome

__all__ = ["Excess", "output_excess", "remove_tree"]

log = logging.getLogger(__name__)

# O_NONBLOCK: a FIFO swapped in for a directory must fail (ENOTDIR), never block the walk.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class Excess:
    """Why an output tree is refused: the run's outcome and a message for its owner."""

    outcome: Outcome
    message: str


def output_excess(root: str | os.PathLike, *, max_bytes: int, max_entries: int, max_depth: int) -> Excess | None:
    """Why the tree at ``root`` passes its caps, or ``None``; stops at the first cap passed.

    ``max_depth`` counts directory levels below ``root`` (``root/a/b`` is two). Sizes come from
    ``lstat``; links are counted, never followed. The walk holds one open directory per level
    and at most ``max_entries + 1`` listed names. A directory the caller may not read is the
    tree owner's doing (mode 000 set by the sandbox user), so it is an :class:`Excess` too
    (``invalid_output``): what cannot be measured cannot be held to a cap. A missing ``root``
    has no excess. Any other ``OSError`` is the platform's and propagates.
    """
    total = entries = 0
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    # Each level: its directory's descriptor, its entries not yet looked at, its level.
    stack: list[tuple[int, list[os.DirEntry], int]] = [(root_fd, [], 0)]
    try:
        try:
            stack[-1][1].extend(_listing(root_fd, max_entries + 1))
        except PermissionError:
            return _unreadable()
        entries += len(stack[-1][1])
        while stack:
            fd, pending, level = stack[-1]
            if entries > max_entries:
                return Excess(Outcome.output_too_large, f"/output holds more than {max_entries} files")
            if not pending:
                os.close(fd)
                stack.pop()
                continue
            entry = pending.pop()
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed while we looked: the container is still running
                continue
            except PermissionError:
                return _unreadable()
            total += st.st_size
            if total > max_bytes:
                return Excess(Outcome.output_too_large, f"/output grew past {max_bytes} bytes")
            if not stat.S_ISDIR(st.st_mode):
                continue
            if level + 1 > max_depth:
                return Excess(Outcome.output_too_large, f"/output nests directories more than {max_depth} levels deep")
            try:
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError):
                continue  # replaced while we looked
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM):
                    return _unreadable()
                if exc.errno == errno.ELOOP:  # became a symbolic link: not followed
                    continue
                raise
            stack.append((child, [], level + 1))
            try:
                stack[-1][1].extend(_listing(child, max_entries - entries + 1))
            except PermissionError:
                return _unreadable()
            entries += len(stack[-1][1])
        return None
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _listing(fd: int, limit: int) -> list[os.DirEntry]:
    """Up to ``limit`` entries of the open directory ``fd`` (enough to tell the count cap passed)."""
    with os.scandir(fd) as listing:
        return list(itertools.islice(listing, max(limit, 0)))


def _unreadable() -> Excess:
    # Which directory, or how deep, is not said: the message is a channel back to the owner.
    return Excess(
        Outcome.invalid_output,
        "/output holds a directory the server cannot read (its mode was changed); leave every directory readable",
    )


def remove_tree(path: str | os.PathLike) -> bool:
    """Remove ``path`` (a file, a link, or a directory and everything in it); ``True`` when it
    is gone. Never raises for what the tree holds; what it could not remove is logged.

    Files are unlinked where they are; the subdirectories of each directory are renamed into
    ``path`` itself (under fresh names), then the emptied directory is removed, until ``path``
    is empty: every operation is at most two levels below ``path``, so neither the depth nor
    the length of the tree's paths matters. Each pass reads a directory once, in one stream
    (re-reading it from its start per batch would cost quadratic time in a directory of
    millions of entries, whose deleted slots every listing walks again).
    """
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return True
        root = _open_dir(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    fresh = (f".edx-arena-rm-{i}" for i in itertools.count())
    try:
        while True:
            seen = progress = 0
            with os.scandir(root) as listing:
                for entry in listing:
                    seen += 1
                    is_dir = entry.is_dir(follow_symlinks=False)
                    progress += _hoist(root, entry.name, fresh) if is_dir else _unlink(root, entry.name)
            if not seen:
                break
            if not progress:
                log.warning("cannot remove %s: %d entries left that this process may not delete", path, seen)
                return False
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    finally:
        os.close(root)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
        return False
    return True


def _open_dir(name: str, dir_fd: int | None = None) -> int:
    """Open a directory (never through a link), first giving it owner rwx if its mode keeps us out."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        if not _loosen(name, dir_fd):
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _loosen(name: str, dir_fd: int | None) -> bool:
    """Owner rwx on directory ``name``, so a mode 000 set inside the sandbox does not stop the
    clean-up. Only matters when this process owns the directory and is not root (root ignores
    modes). ``O_PATH`` opens it without read access and without following a link; the chmod then
    goes through ``/proc/self/fd``, the one way to chmod such a descriptor."""
    try:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _unlink(root: int, name: str) -> bool:
    try:
        os.unlink(name, dir_fd=root)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _hoist(root: int, name: str, fresh) -> bool:
    """Empty directory ``name`` (its files unlinked, its subdirectories moved into ``root``) and
    remove it; ``True`` on progress."""
    try:
        child = _open_dir(name, root)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # not a directory after all
            return _unlink(root, name)
        return False
    try:
        while True:
            seen = progress = 0
            with os.scandir(child) as listing:
                for entry in listing:
                    seen += 1
                    if entry.is_dir(follow_symlinks=False):
                        progress += _rename_up(child, entry.name, root, fresh)
                    else:
                        progress += _unlink(child, entry.name)
            if not seen:
                break
            if not progress:
                return False
    except OSError:
        return False
    finally:
        os.close(child)
    try:
        os.rmdir(name, dir_fd=root)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _rename_up(child: int, name: str, root: int, fresh) -> bool:
    # A fresh name may already exist in root (the participant chose it): a file there is simply
    # replaced (it was to be deleted anyway); a directory there makes the rename fail, so try
    # the next name.
    # Moving a directory to another parent rewrites its "..": it needs write access to it.
    loosened = False
    for _ in range(64):
        try:
            os.rename(name, next(fresh), src_dir_fd=child, dst_dir_fd=root)
            return True
        except FileNotFoundError:
            return True
        except PermissionError:
            if loosened or not _loosen(name, child):
                return False
            loosened = True
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                return False
    return False
