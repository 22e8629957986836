"""What of a sandboxed run's log its owner may see (design §5: "their own capped log, never the
hidden data or its values").

A container on the Hidden tier reads measurements nobody may see, and whatever it prints comes
back to its owner. Printing the data, or parameters fitted to it, would let a participant tune
an image to the very scenes it is scored on. No filter can stop a determined encoder (a few
floats fit in words), so the policy narrows the channel instead of pretending to close it:

- ``failures`` (the default): a successful run needs no debugging, so its owner sees no log; a
  failed run shows its last lines, each cut short, with lines that look like data withheld.
- ``always``: the same filtered tail for every run; ``never``: no log at all; ``full``: the
  whole capped log (for a trusted or practice tier).

Organizers always see the full capped log; the image digest is recorded, so a winning image can
be audited for such tricks afterwards, which is the real deterrent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["POLICIES", "LogPolicy", "looks_like_data", "participant_log"]

POLICIES = ("failures", "always", "never", "full")

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: Long runs of base64 / hex characters: a way to smuggle numbers in a "word".
_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{48,}")


@dataclass(frozen=True)
class LogPolicy:
    mode: Literal["failures", "always", "never", "full"] = "failures"
    #: At most this many of the last lines are shown.
    max_lines: int = 50
    #: Each shown line is cut to this many characters.
    max_line_chars: int = 240
    #: A line with more numbers than this is withheld (a traceback line has one or two).
    max_numbers_per_line: int = 8

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ValueError(f"unknown log policy {self.mode!r}; policies are {', '.join(POLICIES)}")


def looks_like_data(line: str, *, max_numbers: int = 8) -> bool:
    """True for a line that carries values rather than prose: more than ``max_numbers``
    numeric tokens, or a base64/hex-like run of 48+ characters."""
    return len(_NUMBER.findall(line)) > max_numbers or _BLOB.search(line) is not None


def participant_log(log: str | None, *, succeeded: bool, policy: LogPolicy = LogPolicy()) -> str | None:
    """The part of ``log`` a Hidden-tier run's owner may see under ``policy`` (None: nothing).

    The result starts with a one-line note of what was left out, so an owner never mistakes a
    filtered log for the whole one.
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
    lines = log.splitlines()
    tail = lines[-policy.max_lines :]
    withheld = cut = 0
    shown = []
    for line in tail:
        if looks_like_data(line, max_numbers=policy.max_numbers_per_line):
            withheld += 1
            shown.append("[line withheld: it looks like data]")
            continue
        if len(line) > policy.max_line_chars:
            cut += 1
            line = line[: policy.max_line_chars] + " …"
        shown.append(line)
    notes = [f"last {len(tail)} of {len(lines)} lines"]
    if withheld:
        notes.append(f"{withheld} withheld as data")
    if cut:
        notes.append(f"{cut} cut to {policy.max_line_chars} characters")
    header = f"[Hidden-tier log, filtered so it cannot carry the hidden data: {'; '.join(notes)}]"
    return "\n".join([header, *shown])
