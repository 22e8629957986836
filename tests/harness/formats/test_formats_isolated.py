"""validate_result_isolated: the same verdicts from a resource-limited child process."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from harness.errors import FileTooLargeError, FormatError
from harness.formats import ResultExpectation, validate_result_isolated


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


def test_child_that_runs_out_of_time_is_killed(result_path, expect):
    with pytest.raises(FormatError) as info:
        validate_result_isolated(result_path, expect, timeout=0.05)
    assert info.value.rule == "timeout"
    assert info.value.message == "the file could not be read safely: validation took longer than 0.05 s"
