"""validate_result_isolated: the same verdicts from a resource-limited child process."""

from __future__ import annotations

import os
import signal
import threading

import h5py
import numpy as np
import pytest

from harness.errors import FileTooLargeError, FormatError
from harness.formats import ResultExpectation, _isolated, validate_result_isolated
from harness.formats._isolated import ValidatorPool
from harness.tiers import SPEC_PARAMETERS


@pytest.fixture
def slow_path(dataset, tmp_path):
    path = tmp_path / "slow.h5"
    _slow_file(path, dataset)
    return path


def test_valid_file_passes_in_the_child(result_path, expect):
    validate_result_isolated(result_path, expect, timeout=60)


def test_child_verdict_keeps_message_where_and_rule(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f["scenes/s1/x_hat"][2, 3, 4] = np.nan
    with pytest.raises(FormatError) as info:
        validate_result_isolated(result_path, expect, timeout=60)
    assert (info.value.where, info.value.rule) == ("/scenes/s1/x_hat", "nonfinite")
    assert info.value.message.startswith("/scenes/s1/x_hat: scene 's1' has 1 non-finite value (NaN or inf)")


def test_size_cap_is_checked_before_spawning(result_path, expect):
    tiny = ResultExpectation(**{**expect.as_dict(), "max_bytes": 100})
    with pytest.raises(FileTooLargeError, match="over the 100 B limit"):
        validate_result_isolated(result_path, tiny, timeout=60)


def test_file_that_exhausts_the_childs_memory_is_unsafe(result_path, expect):
    # A variable-length string's length is only known by reading it: 48 MB of "format".
    with h5py.File(result_path, "a") as f:
        f.attrs["format"] = "x" * (48 << 20)
    with pytest.raises(FormatError) as info:
        roomy = ResultExpectation(**{**expect.as_dict(), "max_bytes": 64 << 20})
        validate_result_isolated(result_path, roomy, timeout=60, memory_bytes=16 << 20)
    assert info.value.rule == "unsafe"
    assert info.value.message == ("the file could not be read safely: reading it needed more than 16.0 MiB of memory")


def _slow_file(path, dataset):
    """A valid file that takes a warm validator well over 10 ms: one-value chunks, each read."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "edx-arena-result"
        f.attrs["format_version"] = 1
        for scene in dataset.scenes:
            g = f.create_group(f"scenes/{scene.scene_id}")
            g.create_dataset("x_hat", data=scene.x_true.astype(np.float32), chunks=(1, 1, 4))
            spec = g.create_group("spec")
            for name, value in zip(SPEC_PARAMETERS, (0.5, -0.01, 0.2, 0.03)):
                spec.attrs[name] = value


def test_child_that_runs_out_of_time_is_killed(slow_path, expect):
    pool = ValidatorPool(size=1)
    try:
        with pytest.raises(FormatError) as info:
            pool.validate(slow_path, expect, timeout=0.01)
        assert info.value.rule == "timeout"
        assert info.value.message == "the file could not be read safely: validation took longer than 0.01 s"
        assert pool.spawned == 1
        pool.validate(slow_path, expect, timeout=60)  # a new child, and the file itself is valid
        assert pool.spawned == 2
    finally:
        pool.close()


# -- the warm pool (issue 20) ----------------------------------------------------------------


def _pids(pool: ValidatorPool) -> set[int]:
    return {child.proc.pid for child in pool._idle}


def test_a_warm_child_answers_many_files(result_path, expect):
    pool = ValidatorPool(size=1)
    try:
        for _ in range(5):
            pool.validate(result_path, expect, timeout=60)
        assert pool.spawned == 1 and len(_pids(pool)) == 1
    finally:
        pool.close()


def test_a_child_is_replaced_after_max_files(result_path, expect):
    pool = ValidatorPool(size=1, max_files=2)
    try:
        for _ in range(5):
            pool.validate(result_path, expect, timeout=60)
        assert pool.spawned == 3  # files 1-2, 3-4, 5
    finally:
        pool.close()


def test_a_child_that_saw_a_bad_file_never_sees_another(result_path, expect, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(result_path.read_bytes())
    with h5py.File(bad, "a") as f:
        f["scenes/s1/x_hat"][0, 5, 5] = np.nan
    pool = ValidatorPool(size=1)
    try:
        pool.validate(result_path, expect, timeout=60)
        before = _pids(pool)
        with pytest.raises(FormatError):
            pool.validate(bad, expect, timeout=60)
        assert _pids(pool) == set()  # retired with its verdict
        pool.validate(result_path, expect, timeout=60)
        assert _pids(pool).isdisjoint(before) and pool.spawned == 2
    finally:
        pool.close()


def test_memory_blow_up_in_a_warm_child_is_judged_by_a_fresh_one(result_path, expect, tmp_path):
    # A warm child that dies may have died of what earlier files left: the request is asked
    # again of a child that saw nothing else, and only that child's death is the verdict.
    bomb = tmp_path / "bomb.h5"
    bomb.write_bytes(result_path.read_bytes())
    with h5py.File(bomb, "a") as f:
        f.attrs["format"] = "x" * (48 << 20)
    roomy = ResultExpectation(**{**expect.as_dict(), "max_bytes": 64 << 20})
    pool = ValidatorPool(size=1, memory_bytes=16 << 20)
    try:
        pool.validate(result_path, roomy, timeout=60)
        with pytest.raises(FormatError) as info:
            pool.validate(bomb, roomy, timeout=60)
        assert info.value.rule == "unsafe" and "16.0 MiB" in info.value.message
        assert pool.spawned == 2  # the warm one, then the fresh one that gave the verdict
        pool.validate(result_path, roomy, timeout=60)  # the pool carries on
    finally:
        pool.close()


def test_a_child_that_died_between_files_is_replaced(result_path, expect):
    pool = ValidatorPool(size=1)
    try:
        pool.validate(result_path, expect, timeout=60)
        (child,) = pool._idle
        os.kill(child.proc.pid, signal.SIGSEGV)  # what a libhdf5 crash looks like from outside
        child.proc.wait()
        pool.validate(result_path, expect, timeout=60)  # retried in a fresh child: valid
        assert pool.spawned == 2
    finally:
        pool.close()


def test_concurrent_callers_share_a_bounded_pool(result_path, expect, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(result_path.read_bytes())
    with h5py.File(bad, "a") as f:
        f["scenes/s0/x_hat"][1, 1, 1] = np.inf
    pool = ValidatorPool(size=2)
    verdicts: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            pool.validate(bad if i % 3 == 0 else result_path, expect, timeout=60)
            verdicts[i] = "ok"
        except FormatError as exc:
            verdicts[i] = exc.rule

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert verdicts == {i: "nonfinite" if i % 3 == 0 else "ok" for i in range(12)}
        assert len(pool._idle) <= 2 and pool._busy == 0
    finally:
        pool.close()


def test_a_forked_process_starts_its_own_pool(result_path, expect):
    validate_result_isolated(result_path, expect)  # this process's pool now holds a child
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = not _isolated._pools
        try:
            validate_result_isolated(result_path, expect)
        except Exception:
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
