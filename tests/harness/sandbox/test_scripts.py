"""Python script submissions: hostile archives are refused with the rule they broke, and a
script runs in the reference base image under the sandbox, with its typed outcomes."""

from __future__ import annotations

import io
import os
import stat
import uuid
import zipfile
from pathlib import Path

import pytest

from harness.errors import ImageError
from harness.formats import read_result, validate_result
from harness.sandbox import Outcome, RunLimits, RunSpec, run_container
from harness.sandbox.scripts import MOUNT_POINT, ScriptLimits, check_script, script_command, unpack_script

BASE = "edx-arena/base:bookworm"
SOLVER = (Path(__file__).parent / "script_solver.py").read_text()


def _zip(path: Path, members: dict, *, compression=zipfile.ZIP_DEFLATED) -> Path:
    """``members``: name → bytes, or name → (bytes, unix mode) to set the entry's mode bits."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            mode = None
            if isinstance(data, tuple):
                data, mode = data
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def _refused(path: Path, fragment: str, limits: ScriptLimits = ScriptLimits()) -> None:
    with pytest.raises(ImageError) as err:
        check_script(path, limits)
    assert fragment in err.value.message, err.value.message
    dest = path.parent / f"unpacked-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ImageError):
        unpack_script(path, dest, limits)
    assert not dest.exists()  # nothing left behind


def test_single_script_is_laid_out_as_main_py(tmp_path):
    src = tmp_path / "solver.py"
    src.write_text(SOLVER)
    assert check_script(src) == "py"
    dest = unpack_script(src, tmp_path / "sub")
    assert sorted(p.name for p in dest.iterdir()) == ["main.py"]
    assert (dest / "main.py").read_text() == SOLVER
    assert stat.S_IMODE(os.stat(dest / "main.py").st_mode) == 0o644 and stat.S_IMODE(os.stat(dest).st_mode) == 0o755


def test_zip_with_modules_is_unpacked_with_safe_modes(tmp_path):
    path = _zip(
        tmp_path / "s.zip",
        {
            "main.py": b"import helpers.io\n",
            "helpers/": b"",
            "helpers/__init__.py": b"",
            "helpers/io.py": (b"X = 1\n", stat.S_IFREG | 0o4777),
        },
    )
    assert check_script(path) == "zip"
    dest = unpack_script(path, tmp_path / "sub")
    assert (dest / "helpers" / "io.py").read_text() == "X = 1\n"
    # the archive's setuid/world-writable mode is ignored
    assert stat.S_IMODE(os.stat(dest / "helpers" / "io.py").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(dest / "helpers").st_mode) == 0o755


@pytest.mark.parametrize(
    "members, fragment",
    [
        ({"main.py": b"", "../evil.py": b"x"}, "'..' path component"),
        ({"main.py": b"", "a/../../evil.py": b"x"}, "'..' path component"),
        ({"main.py": b"", "/etc/evil.py": b"x"}, "absolute path"),
        ({"main.py": b"", "C:/evil.py": b"x"}, "absolute path"),
        ({"main.py": b"", "a\\..\\evil.py": b"x"}, "backslash"),
        ({"main.py": b"", "a//b.py": b"x"}, "empty, '.' or '..'"),
        ({"main.py": b"", "bad\nname.py": b"x"}, "control character"),
        ({"main.py": b"", "link.py": (b"/etc/passwd", stat.S_IFLNK | 0o777)}, "symbolic link"),
        ({"main.py": (b"/etc/passwd", stat.S_IFLNK | 0o777)}, "symbolic link"),
        ({"main.py": b"", "fifo": (b"", stat.S_IFIFO | 0o644)}, "not a regular file or directory"),
        ({"solver/main.py": b"x"}, "no main.py at its top level (it holds solver)"),
        ({}, "no main.py at its top level (it holds no files)"),
        ({"main.py": b"", "a": b"x", "a/b.py": b"y"}, "both a file and a directory"),
    ],
)
def test_hostile_archive_names_and_types_are_refused(tmp_path, members, fragment):
    _refused(_zip(tmp_path / "s.zip", members), fragment)


def test_duplicate_names_are_refused(tmp_path):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("main.py", b"a")
        with pytest.warns(UserWarning):
            zf.writestr("main.py", b"b")
    _refused(path, "two entries named 'main.py'")


def test_zip_bomb_is_refused_by_ratio_before_unpacking(tmp_path):
    path = _zip(tmp_path / "bomb.zip", {"main.py": b"pass\n", "data.bin": b"\0" * (20 * 2**20)})
    assert path.stat().st_size < 100_000
    _refused(path, "the archive expands 1018-fold (20598 → 20971525 bytes); the limit is 100-fold (a zip bomb?)")


def test_total_size_and_entry_count_caps(tmp_path):
    big = _zip(
        tmp_path / "big.zip", {"main.py": b"pass\n", "data.bin": os.urandom(300_000)}, compression=zipfile.ZIP_STORED
    )
    _refused(big, "unpacks to more than 200000 bytes", ScriptLimits(max_total_bytes=200_000))
    many = _zip(tmp_path / "many.zip", {"main.py": b"", **{f"m{i}.py": b"" for i in range(20)}})
    _refused(many, "the archive has 21 entries; the limit is 10", ScriptLimits(max_entries=10))


def test_entry_that_unpacks_past_its_declared_size_is_refused(tmp_path):
    """Declared sizes can lie: the copy is capped at the declared size, not trusted."""
    path = _zip(tmp_path / "s.zip", {"main.py": b"pass\n", "data.txt": b"A" * 5000})
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("data.txt")
    # Lower the declared uncompressed size in the central directory (and the local header).
    for needle in (info.file_size.to_bytes(4, "little"),):
        at = raw.rfind(needle)
        raw[at : at + 4] = (100).to_bytes(4, "little")
        at = raw.find(needle)
        raw[at : at + 4] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    dest = tmp_path / "sub"
    with pytest.raises(ImageError) as err:
        unpack_script(path, dest)
    assert "data.txt" in err.value.message
    assert not dest.exists()


def test_encrypted_damaged_and_non_text_uploads_are_refused(tmp_path):
    path = _zip(tmp_path / "enc.zip", {"main.py": b"pass\n"}, compression=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")
    raw[central + 8] |= 0x1  # general purpose flag: encrypted
    path.write_bytes(bytes(raw))
    _refused(path, "is encrypted")

    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04" + b"\xff" * 100)
    _refused(damaged, "damaged or unsupported")

    binary = tmp_path / "a.py"
    binary.write_bytes(b"print(1)\0\1\2")
    _refused(binary, "contains NUL bytes")
    latin = tmp_path / "b.py"
    latin.write_bytes("print('caf\u00e9')".encode("latin-1"))
    _refused(latin, "not UTF-8")
    empty = tmp_path / "c.py"
    empty.write_bytes(b"")
    _refused(empty, "the script is empty")
    huge = tmp_path / "d.py"
    huge.write_bytes(b"#" * 2000)
    _refused(huge, "a single .py file may be at most 1000 bytes", ScriptLimits(max_source_bytes=1000))


# ---- runs in the reference base image -------------------------------------------------------


@pytest.fixture
def run_script(images, measurement, tmp_path):
    client = images

    def _run(source: str | bytes, *, name="main.py", validate_output=None, **limits):
        upload = tmp_path / f"upload-{uuid.uuid4().hex[:6]}"
        if isinstance(source, bytes):  # a zip
            upload.write_bytes(source)
        else:
            upload.write_text(source)
        work = tmp_path / f"work-{uuid.uuid4().hex[:6]}"
        work.mkdir()
        files = unpack_script(upload, work / "submission")
        run_id = f"test-{uuid.uuid4().hex[:12]}"
        spec = RunSpec(
            run_id=run_id,
            image=BASE,
            input_path=measurement,
            work_dir=work,
            limits=RunLimits(**{"memory_bytes": 512 * 2**20, "wall_seconds": 60, "output_bytes": 8 * 2**20, **limits}),
            command=script_command(),
            read_only_mounts={str(files): MOUNT_POINT},
            environment={"HOME": "/tmp"},
            validate_output=validate_output,
        )
        result = run_container(spec, client=client)
        assert not client.containers.list(all=True, filters={"label": f"edx-arena.run={run_id}"})
        return result

    return _run


@pytest.mark.docker
def test_script_solves_in_the_base_image(run_script, expect, hidden_dataset):
    result = run_script(SOLVER, validate_output=lambda p: validate_result(p, expect))
    assert result.outcome == Outcome.succeeded, (result.message, result.log)
    assert "wrote /output/result.h5" in result.log and result.exit_code == 0
    read = read_result(result.output_path, expect)
    assert set(read.scenes) == {s.scene_id for s in hidden_dataset.scenes}


@pytest.mark.docker
def test_zip_script_imports_its_own_module(run_script, expect, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("main.py", "from lib.solve import run\nrun()\n")
        zf.writestr("lib/__init__.py", "")
        zf.writestr("lib/solve.py", "def run():\n" + "".join("    " + line + "\n" for line in SOLVER.splitlines()))
    result = run_script(buf.getvalue(), validate_output=lambda p: validate_result(p, expect))
    assert result.outcome == Outcome.succeeded, (result.message, result.log)


@pytest.mark.docker
def test_missing_import_is_nonzero_exit_with_traceback(run_script):
    result = run_script("import numpy\nimport torch  # not in the base image\n")
    assert result.outcome == Outcome.nonzero_exit and result.exit_code == 1
    assert "Traceback (most recent call last)" in result.log
    assert "ModuleNotFoundError: No module named 'torch'" in result.log
    assert result.message == "the container exited with code 1; the log shows the error"


@pytest.mark.docker
def test_script_cannot_change_its_files_or_reach_the_network(run_script):
    probe = (
        "import socket, sys\n"
        "try:\n    open('/submission/main.py', 'a')\nexcept OSError as e:\n    print('submission', e.errno)\n"
        "print([line.split()[3].split(',')[0] for line in open('/proc/self/mounts') if line.split()[1] == '/submission'])\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\nexcept OSError as e:\n    print('network', type(e).__name__)\n"
        "import os\nprint('uid', os.getuid())\nsys.exit(3)\n"
    )
    result = run_script(probe)
    assert result.outcome == Outcome.nonzero_exit and result.exit_code == 3
    assert "submission 13" in result.log  # EACCES: root's files, and beneath them
    assert "['ro']" in result.log  # a read-only bind mount
    assert "network OSError" in result.log and "uid 65534" in result.log


@pytest.mark.docker
def test_script_that_writes_nothing_is_missing_output(run_script):
    result = run_script("print('forgot the result')\n")
    assert result.outcome == Outcome.missing_output
