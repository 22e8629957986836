"""Method names (design §7): an entry on every board is a (participant, method) pair, and two
spellings of one name are one method.

:func:`method_key` is the normal form stored beside the name (``submissions.method_key``):
trimmed, case-folded, inner whitespace collapsed to one space; an empty name is
:data:`UNNAMED`. The name as typed is what boards show.
"""

from __future__ import annotations

__all__ = ["UNNAMED", "method_key"]

#: The key of a submission sent without a method name.
UNNAMED = "unnamed"


def method_key(name: str | None) -> str:
    """The normal form of a method name: ``"  SwinEDX  +\\tGradient "`` → ``"swinedx + gradient"``."""
    key = " ".join((name or "").split()).casefold()
    return key or UNNAMED
