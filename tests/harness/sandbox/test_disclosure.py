"""The owner's view of a Hidden-tier run log (harness.sandbox.disclosure): nothing on success by
default, a short filtered tail on failure, data-like lines withheld, always saying what was cut."""

from __future__ import annotations

import numpy as np
import pytest

from harness.sandbox.disclosure import LogPolicy, looks_like_data, participant_log

TRACEBACK = """Traceback (most recent call last):
  File "/opt/solver/main.py", line 12, in <module>
    x = np.linalg.solve(a, b)
numpy.linalg.LinAlgError: Singular matrix"""


def test_a_successful_run_shows_no_log_by_default():
    shown = participant_log("fitted theta = 0.512 -0.013 0.207 0.031\nwrote /output/result.h5", succeeded=True)
    assert "0.512" not in shown and "not shown to its owner when the run succeeds" in shown


def test_a_failed_run_shows_its_traceback_whole():
    shown = participant_log("loading\n" + TRACEBACK, succeeded=False)
    assert shown.splitlines()[1:] == ["loading", *TRACEBACK.splitlines()]
    assert shown.startswith("[Hidden-tier log, filtered") and "last 5 of 5 lines" in shown


@pytest.mark.parametrize(
    "dump",
    [
        np.array2string(np.random.default_rng(0).poisson(30, 40), max_line_width=10**4),  # numpy prints counts
        " ".join(f"{v:.6g}" for v in np.random.default_rng(1).random(9)),
        "[[0.1 0.2 0.3]\n [0.4 0.5 0.6]\n [0.7 0.8 0.9]]".replace("\n", " "),
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2",  # base64 of anything
        "deadbeef" * 8,  # hex
    ],
)
def test_data_like_lines_are_withheld(dump):
    assert looks_like_data(dump)
    shown = participant_log(f"start\n{dump}\nValueError: bad shape", succeeded=False)
    assert dump not in shown and "[line withheld: it looks like data]" in shown
    assert "ValueError: bad shape" in shown and "1 withheld as data" in shown


def test_prose_with_a_few_numbers_is_kept():
    for line in (
        '  File "main.py", line 12, in <module>',
        "ValueError: shapes (6,128,128) and (1000,) not aligned",
        "scene 2 of 3 done in 4.5 s",
    ):
        assert not looks_like_data(line), line


def test_only_the_last_lines_and_short_lines_are_shown():
    log = "\n".join(f"step {i}" for i in range(500)) + "\n" + "word " * 200
    shown = participant_log(log, succeeded=False, policy=LogPolicy(max_lines=10, max_line_chars=100))
    lines = shown.splitlines()
    assert len(lines) == 11 and lines[1] == "step 491" and lines[-1] == ("word " * 20)[:100] + " …"
    assert "last 10 of 501 lines" in lines[0] and "1 cut to 100 characters" in lines[0]


def test_other_policies():
    log = "a\n" + TRACEBACK
    assert participant_log(log, succeeded=True, policy=LogPolicy("full")) == log
    assert "a" in participant_log(log, succeeded=True, policy=LogPolicy("always")).splitlines()
    never = participant_log(log, succeeded=False, policy=LogPolicy("never"))
    assert "Singular" not in never and "not shown to its owner" in never
    assert participant_log(None, succeeded=False) is None
    with pytest.raises(ValueError, match="unknown log policy 'some'"):
        LogPolicy("some")  # type: ignore[arg-type]
