"""The owner's view of a Hidden-tier run log (harness.sandbox.disclosure): nothing on success by
default; on failure a fixed header and the error that ended the run, at most EXCERPT_BYTES bytes
of the run's own text whatever it printed (the log's term of the exfiltration budget)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sandbox.disclosure import (
    EXCERPT_BYTES,
    MEMORY_STEP_BYTES,
    LogPolicy,
    error_excerpt,
    looks_like_data,
    participant_log,
    shown_memory,
    shown_runtime,
)

TRACEBACK = """Traceback (most recent call last):
  File "/opt/solver/main.py", line 12, in <module>
    x = np.linalg.solve(a, b)
        ^^^^^^^^^^^^^^^^^^^^^
numpy.linalg.LinAlgError: Singular matrix"""
HEADER = participant_log("anything", succeeded=False).splitlines()[0]
#: Lines of the owner's view that are the server's own words, not the run's.
FIXED = ("[withheld: it looks like data]", "(the log is empty)")
CUT = " […]"


def run_bytes(shown: str) -> int:
    """Bytes of the run's own text in an owner's view: everything but the header and markers."""
    total = 0
    for line in shown.splitlines()[1:]:
        if line in FIXED:
            continue
        total += len(line.removesuffix(CUT).encode())
    return total


def test_a_successful_run_shows_no_log_by_default():
    shown = participant_log("fitted theta = 0.512 -0.013 0.207 0.031\nwrote /output/result.h5", succeeded=True)
    assert "0.512" not in shown and "not shown to its owner when the run succeeds" in shown


def test_a_failed_run_shows_the_exception_line_and_its_frame():
    shown = participant_log("loading\n" + TRACEBACK + "\ncleaning up", succeeded=False)
    assert shown.splitlines() == [
        HEADER,
        'File "/opt/solver/main.py", line 12, in <module>',
        "numpy.linalg.LinAlgError: Singular matrix",
    ]
    assert HEADER.startswith("[Hidden-tier log:") and f"at most {EXCERPT_BYTES} bytes" in HEADER


def test_the_last_traceback_of_a_chain_is_the_one_shown():
    chained = (
        TRACEBACK
        + "\n\nDuring handling of the above exception, another exception occurred:\n\n"
        + 'Traceback (most recent call last):\n  File "/app/run.py", line 3, in <module>\n    main()\n'
        + "ModuleNotFoundError: No module named 'torch'\nmore output"
    )
    assert error_excerpt(chained) == [
        'File "/app/run.py", line 3, in <module>',
        "ModuleNotFoundError: No module named 'torch'",
    ]


def test_without_a_traceback_the_last_line_is_shown():
    shown = participant_log("step 1\nsolver crashed: no convergence\n\n", succeeded=False)
    assert shown.splitlines()[1:] == ["solver crashed: no convergence"]
    assert participant_log("", succeeded=False).splitlines()[1:] == ["(the log is empty)"]


def test_a_long_exception_line_is_cut_and_takes_precedence_over_the_frame():
    log = TRACEBACK.replace("Singular matrix", "é" * 400)
    shown = participant_log(log, succeeded=False).splitlines()
    assert len(shown) == 2 and shown[1].startswith("numpy.linalg.LinAlgError: éé") and shown[1].endswith(CUT)
    assert len(shown[1].removesuffix(CUT).encode()) <= EXCERPT_BYTES  # cut at a character boundary
    shown[1].encode().decode("utf-8")


@pytest.mark.parametrize(
    "dump",
    [
        np.array2string(np.random.default_rng(0).poisson(30, 40), max_line_width=10**4),  # numpy prints counts
        " ".join(f"{v:.6g}" for v in np.random.default_rng(1).random(9)),
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2",  # base64 of anything
        "deadbeef" * 8,  # hex
    ],
)
def test_a_data_like_error_line_is_withheld(dump):
    assert looks_like_data(dump)
    shown = participant_log(f"start\nValueError: {dump}", succeeded=False)
    assert dump not in shown and shown.splitlines()[1:] == ["[withheld: it looks like data]"]


def test_prose_with_a_few_numbers_is_kept():
    for line in (
        '  File "main.py", line 12, in <module>',
        "ValueError: shapes (6,128,128) and (1000,) not aligned",
        "scene 2 of 3 done in 4.5 s",
    ):
        assert not looks_like_data(line), line


def test_the_letter_word_bypass_of_the_old_filter_carries_at_most_the_excerpt():
    # 47-letter words joined by dots passed the old number and base64 rules: 50 lines of 240
    # characters, about 8 KiB of anything per failed run. Now every line but one is dropped.
    rng = np.random.default_rng(2)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"), 47)) for _ in range(5000)]
    log = "\n".join(".".join(words[i : i + 5]) for i in range(0, len(words), 5))
    shown = participant_log(log, succeeded=False)
    assert run_bytes(shown) <= EXCERPT_BYTES
    assert sum(w in shown for w in words) <= EXCERPT_BYTES // 47


def test_other_policies():
    log = "a\n" + TRACEBACK
    assert participant_log(log, succeeded=True, policy=LogPolicy("full")) == log
    assert participant_log(log, succeeded=True, policy=LogPolicy("always")).splitlines()[-1].endswith("Singular matrix")
    never = participant_log(log, succeeded=False, policy=LogPolicy("never"))
    assert never == participant_log("other", succeeded=False, policy=LogPolicy("never"))
    assert "Singular" not in never and "not shown to its owner" in never
    assert participant_log(None, succeeded=False) is None
    with pytest.raises(ValueError, match="unknown log policy 'some'"):
        LogPolicy("some")  # type: ignore[arg-type]


def test_runtime_and_memory_are_rounded_up_to_their_steps():
    assert [shown_runtime(s) for s in (None, 0.0, 0.2, 1.0, 1.0001, 1799.3)] == [None, 0.0, 1.0, 1.0, 2.0, 1800.0]
    assert shown_memory(None) is None and shown_memory(0) == 0
    assert shown_memory(1) == shown_memory(MEMORY_STEP_BYTES) == MEMORY_STEP_BYTES
    assert shown_memory(37 * MEMORY_STEP_BYTES + 4096) == 38 * MEMORY_STEP_BYTES


_LINE = st.one_of(
    st.text(max_size=400),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz.", min_size=200, max_size=2000),
    st.builds(lambda s: f"ValueError: {s}", st.text(max_size=600)),
    st.builds(lambda s: f'  File "{s}", line 1, in f', st.text(max_size=300)),
    st.just("Traceback (most recent call last):"),
)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_LINE, max_size=40), succeeded=st.booleans(), mode=st.sampled_from(["failures", "always"]))
def test_no_log_shows_more_than_the_excerpt_budget(lines, succeeded, mode):
    """Whatever a run prints: one fixed header, at most two lines, and at most EXCERPT_BYTES
    bytes of the run's own text, each byte of it from the log."""
    log = "\n".join(lines)
    shown = participant_log(log, succeeded=succeeded, policy=LogPolicy(mode))
    if mode == "failures" and succeeded:
        assert shown == participant_log("", succeeded=True)
        return
    out = shown.splitlines()
    assert out[0] == HEADER and len(out) <= 3
    assert run_bytes(shown) <= EXCERPT_BYTES
    for line in out[1:]:
        if line not in FIXED:
            part = line.removesuffix(CUT)
            assert any(part in original.replace("\r", "?") for original in log.splitlines()) or "?" in part
