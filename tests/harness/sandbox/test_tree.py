"""The output walk and the remover on trees a hostile container leaves: 5,000 levels deep (past
Python's recursion limit and PATH_MAX), odd modes, FIFOs, links out of the tree."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from harness.sandbox import Outcome
from harness.sandbox.tree import output_excess, remove_tree

DEPTH = 5000
CAPS = dict(max_bytes=2**30, max_entries=100_000, max_depth=32)


def _deep_tree(root: Path, depth: int, *, victim: Path | None = None) -> None:
    """``root/d/d/…`` ``depth`` levels deep, made through directory descriptors (no path could
    name the bottom). Every 500th level also holds a read-only file, a FIFO, a link to
    ``victim`` and a subdirectory of mode 000; the chain's own directories get mode 000 too
    (as root only CAP_DAC_OVERRIDE gets through them)."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            if level % 500 == 0:
                file = os.open("ro", os.O_WRONLY | os.O_CREAT, 0o000, dir_fd=fd)
                os.write(file, b"x" * 100)
                os.close(file)
                os.mkfifo("fifo", dir_fd=fd)
                if victim is not None:
                    os.symlink(victim, "escape", dir_fd=fd)
                os.mkdir("locked", 0o000, dir_fd=fd)
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if level > 0:  # mode 000 on the chain itself, once we hold its child open
                os.fchmod(fd, 0o000)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


@pytest.fixture
def deep(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("outside the tree")
    root = tmp_path / "output"
    _deep_tree(root, DEPTH, victim=victim)
    yield root, victim
    assert remove_tree(root)  # pytest's own clean-up of tmp_path would recurse


def test_the_standard_library_cannot_handle_the_tree(deep):
    # Why harness.sandbox.tree exists (Python 3.11): both recurse, one frame per level.
    root, _ = deep
    with pytest.raises(RecursionError):
        for _ in os.walk(root):
            pass
    with pytest.raises(RecursionError):
        shutil.rmtree(root)


def test_a_deep_tree_passes_the_depth_cap_quickly(deep):
    root, _ = deep
    excess = output_excess(root, **CAPS)
    assert excess is not None and excess.outcome == Outcome.output_too_large
    assert excess.message == "/output nests directories more than 32 levels deep"


def test_the_remover_takes_a_deep_tree_and_nothing_outside(deep):
    root, victim = deep
    assert remove_tree(root) is True
    assert not root.exists()
    assert (victim / "keep").read_text() == "outside the tree"  # the links were removed, not followed


def test_walk_counts_and_caps(tmp_path):
    root = tmp_path / "out"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x" * 1000)
    (root / "link").symlink_to("/etc/passwd")
    assert output_excess(root, max_bytes=10**6, max_entries=4, max_depth=2) is None
    assert output_excess(root, max_bytes=10**6, max_entries=3, max_depth=2).message == "/output holds more than 3 files"
    assert output_excess(root, max_bytes=10**6, max_entries=4, max_depth=1).message == (
        "/output nests directories more than 1 levels deep"
    )
    small = output_excess(root, max_bytes=999, max_entries=4, max_depth=2)
    assert small.outcome == Outcome.output_too_large and small.message == "/output grew past 999 bytes"
    assert output_excess(tmp_path / "missing", **CAPS) is None


def test_remover_takes_files_links_and_missing_paths(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    file.chmod(0o000)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    assert remove_tree(file) and remove_tree(link) and remove_tree(tmp_path / "missing")
    assert not file.exists() and not link.is_symlink() and tmp_path.is_dir()


def test_remover_copes_with_names_it_would_pick(tmp_path):
    # The participant may pre-create the names the remover moves entries to.
    root = tmp_path / "out"
    for i in range(80):
        (root / f".edx-arena-rm-{i}" / "x").mkdir(parents=True)
    (root / "d" / "e" / "f").mkdir(parents=True)
    assert remove_tree(root) and not root.exists()


def _as_nobody(func) -> int:
    """Run ``func()`` in a forked child as uid/gid 65534; its return value (an int) is the exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = func()
        except BaseException as exc:
            os.write(2, f"as 65534: {exc!r}\n".encode())
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def open_tmp():
    """A temporary directory the sandbox user can reach (pytest's own is private to root)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="edx-tree-"))
    path.chmod(0o755)
    yield path
    assert remove_tree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as the sandbox user")
def test_modes_the_sandbox_user_sets(open_tmp):
    """As a worker that is not root: a directory it may not read is the participant's
    invalid_output, and its own directories of mode 000 do not stop the remover."""
    tmp_path = open_tmp
    writable = tmp_path / "w"  # where the unprivileged child may write
    writable.mkdir()
    writable.chmod(0o777)
    theirs = tmp_path / "theirs"
    (theirs / "sealed").mkdir(parents=True)
    (theirs / "sealed" / "big").write_bytes(b"x" * 10_000)
    (theirs / "sealed").chmod(0o000)  # root's: the unprivileged walker cannot look in
    verdict = writable / "verdict"

    def walk() -> int:
        excess = output_excess(theirs, **CAPS)
        verdict.write_text(f"{excess.outcome}|{excess.message}" if excess else "none")
        return 0

    assert _as_nobody(walk) == 0
    outcome, message = verdict.read_text().split("|")
    assert outcome == "invalid_output"
    assert message == (
        "/output holds a directory the server cannot read (its mode was changed); leave every directory readable"
    )

    own = writable / "own"

    def make_and_remove() -> int:
        _deep_tree(own, 50)
        os.chmod(own, 0o000)
        return 0 if remove_tree(own) and not os.path.lexists(own) else 1

    assert _as_nobody(make_and_remove) == 0
    assert not own.exists()
    assert stat.S_IMODE(writable.stat().st_mode) == 0o777
