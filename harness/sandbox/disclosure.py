"""What of a sandboxed run its owner may see (design §5: "their own capped, filtered log, never
the hidden data or its values"; every channel counted in one exfiltration budget per run).

A container on the Hidden tier reads measurements nobody may see, and whatever it prints comes
back to its owner. Printing the data, or parameters fitted to it, would let a participant tune
an image to the very scenes it is scored on. No filter can tell data from prose (a number fits
in a word, a word in a name), so the owner's view is bounded by its size, not by its looks:
``docs/sandbox.md`` adds up every channel (log, message, exit code, runtime, memory, timing)
and the default keeps the total under 256 bytes per run.

- ``failures`` (the default): a successful run needs no debugging, so its owner sees no log; a
  failed run shows the error that ended it, the thing a participant needs: the last Python
  traceback's exception line and innermost frame (or, with no traceback, the last line), at
  most :data:`EXCERPT_BYTES` bytes of the run's own text under a fixed header.
- ``always``: the same excerpt for every run; ``never``: no log at all; ``full``: the whole
  capped log (for a trusted or practice tier: kilobytes per run, outside the budget).

Runtime and peak memory are shown to owners rounded up to :data:`RUNTIME_STEP_SECONDS` and
:data:`MEMORY_STEP_BYTES`; the figures of a succeeded run's scores that its output sets exactly,
without the truth, coarsened (:func:`shown_steered`). Organizers always see everything; the image digest is recorded, so a
winning image can be audited for such tricks afterwards, which is the real deterrent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "EXCERPT_BYTES",
    "MEMORY_STEP_BYTES",
    "POLICIES",
    "RUNTIME_STEP_SECONDS",
    "STEERED_FIGURES",
    "LogPolicy",
    "error_excerpt",
    "looks_like_data",
    "participant_log",
    "shown_memory",
    "shown_runtime",
    "shown_steered",
]

POLICIES = ("failures", "always", "never", "full")
#: Bytes (UTF-8) of the run's own text the owner may see under ``failures``/``always``: the
#: largest term of the 256-byte budget, sized so that a traceback's last frame and exception
#: line usually fit whole.
EXCERPT_BYTES = 192
#: Owners see runtime in whole seconds and peak memory in whole MiB, both rounded up.
RUNTIME_STEP_SECONDS = 1
MEMORY_STEP_BYTES = 1 << 20

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: Long runs of base64 / hex characters: a way to smuggle numbers in a "word".
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{48,}")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):\s*")
_FRAME = re.compile(r'\s+File ".*", line \d+, in .*')
#: C0 controls but tab, and DEL: terminal escapes have no place in a message.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_WITHHELD = "[withheld: it looks like data]"
_CUT = " […]"
#: A line is shown only with at least this many of its bytes (a frame cut to "  Fi" helps no one).
_MIN_PART_BYTES = 24


@dataclass(frozen=True)
class LogPolicy:
    mode: Literal["failures", "always", "never", "full"] = "failures"
    #: Bytes of the run's own text shown (the excerpt), all lines together.
    excerpt_bytes: int = EXCERPT_BYTES
    #: An excerpt line with more numbers than this is withheld (a traceback line has one or two).
    max_numbers_per_line: int = 8

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ValueError(f"unknown log policy {self.mode!r}; policies are {', '.join(POLICIES)}")


def looks_like_data(line: str, *, max_numbers: int = 8) -> bool:
    """True for a line that carries values rather than prose: more than ``max_numbers``
    numeric tokens, or a base64/hex-like run of 48+ characters.

    Not a bound (letters carry data as well as digits do): it keeps an honest method's
    ``print(theta)`` or array repr out of the owner's view; the bound is the excerpt's size.
    """
    return len(_NUMBER.findall(line)) > max_numbers or _BLOB.search(line) is not None


def error_excerpt(log: str) -> list[str]:
    """The lines that say why the run failed: the last Python traceback's innermost ``File``
    line and its exception line (the first unindented line after the frames), or without a
    traceback the last non-empty line. Uncut, unfiltered: :func:`participant_log` does that."""
    lines = log.splitlines()
    start = next((i for i in range(len(lines) - 1, -1, -1) if _TRACEBACK.fullmatch(lines[i])), None)
    if start is None:
        last = next((line for line in reversed(lines) if line.strip()), None)
        return [] if last is None else [last.strip()]
    frame = None
    for line in lines[start + 1 :]:
        if _FRAME.fullmatch(line):
            frame = line.strip()
        elif line.strip() and not line[0].isspace():
            return [line.strip()] if frame is None else [frame, line.strip()]
    return [] if frame is None else [frame]  # the exception line was cut off (log cap, kill)


def _cut(line: str, budget: int) -> tuple[str, int]:
    """``line`` in at most ``budget`` UTF-8 bytes, cut at a character boundary and marked, and
    the number of the line's own bytes kept."""
    raw = line.encode()
    if len(raw) <= budget:
        return line, len(raw)
    kept = raw[:budget].decode("utf-8", "ignore")
    return kept + _CUT, len(kept.encode())


def participant_log(log: str | None, *, succeeded: bool, policy: LogPolicy = LogPolicy()) -> str | None:
    """The part of ``log`` a Hidden-tier run's owner may see under ``policy`` (None: nothing).

    Under ``failures``/``always`` the result is a fixed header line, then at most
    ``policy.excerpt_bytes`` bytes of the run's text (the exception line first, then the
    frame if it still fits), in :func:`error_excerpt`'s order; a data-like line is replaced by
    a fixed marker, control characters by ``?``. The header carries no number from the log.
    """
    if log is None:
        return None
    if policy.mode == "full":
        return log
    if policy.mode == "never" or (policy.mode == "failures" and succeeded):
        return (
            "[the log of a Hidden-tier run is not shown to its owner"
            + (" when the run succeeds" if policy.mode == "failures" else "")
            + ": it could carry the hidden data; organizers can read it]"
        )
    header = (
        f"[Hidden-tier log: its owner sees only the error that ended the run, at most {policy.excerpt_bytes} "
        "bytes of it, so that the log cannot carry the hidden data; organizers can read the whole log]"
    )
    excerpt = [_CONTROL.sub("?", line) for line in error_excerpt(log)]
    if not excerpt:
        return "\n".join([header, "(the log is empty)"])
    budget = policy.excerpt_bytes
    shown: list[str] = []
    for line in reversed(excerpt):  # the exception line is last and matters most
        if looks_like_data(line, max_numbers=policy.max_numbers_per_line):
            shown.insert(0, _WITHHELD)
        elif budget >= _MIN_PART_BYTES or not shown:
            part, used = _cut(line, budget)
            budget -= used
            shown.insert(0, part)
    return "\n".join([header, *shown])


def shown_runtime(seconds: float | None) -> float | None:
    """A runtime as owners of Hidden runs see it: rounded up to :data:`RUNTIME_STEP_SECONDS`."""
    if seconds is None:
        return None
    return float(math.ceil(max(seconds, 0.0) / RUNTIME_STEP_SECONDS) * RUNTIME_STEP_SECONDS)


def shown_memory(nbytes: int | None) -> int | None:
    """A peak memory as owners of Hidden runs see it: rounded up to :data:`MEMORY_STEP_BYTES`."""
    if nbytes is None:
        return None
    return -(-max(int(nbytes), 0) // MEMORY_STEP_BYTES) * MEMORY_STEP_BYTES


#: Figures of a score row that a run's output sets exactly, needing no truth: the consistency
#: against the measurement the run read (it can compute the same formula), in [0, 1], and how
#: many NaN or infinite values it wrote. At float64 precision each would carry about 52 bits
#: out of a Hidden run; :func:`shown_steered` shows the first to 4 decimals (10,001 values,
#: 13.3 bits) and the second to 1 significant digit (47 values up to a default scene's 98,304
#: samples, 5.6 bits): docs/sandbox.md, exfiltration budget. Every other figure depends on the
#: hidden truth.
STEERED_FIGURES = ("consistency_measured", "nonfinite_count")


def shown_steered(metrics):
    """A score row's ``metrics`` (scenes nested at any depth) with the :data:`STEERED_FIGURES`
    coarsened: ``0.987654`` → ``0.9877``, ``4321`` → ``4000``."""
    if isinstance(metrics, dict):
        return {k: _coarse(k, v) if k in STEERED_FIGURES else shown_steered(v) for k, v in metrics.items()}
    if isinstance(metrics, list):
        return [shown_steered(v) for v in metrics]
    return metrics


def _coarse(key: str, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value == 0:
        return value
    if key == "consistency_measured":
        return round(value, 4)
    return round(value, -math.floor(math.log10(abs(value))))  # one significant digit
