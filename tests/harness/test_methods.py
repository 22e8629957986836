"""harness/methods.py: the normal form of a method name."""

from __future__ import annotations

import pytest

from harness.methods import UNNAMED, method_key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("SwinEDX + gradient", "swinedx + gradient"),
        ("  SwinEDX  +\tGradient \n", "swinedx + gradient"),
        ("MLEM", "mlem"),
        ("Straße", "strasse"),  # case-folded, not only lower-cased
        ("", UNNAMED),
        ("   \t ", UNNAMED),
        (None, UNNAMED),
    ],
)
def test_method_key(name, key):
    assert method_key(name) == key


def test_method_key_is_idempotent():
    for name in ("A  b", " Über   Method ", ""):
        assert method_key(method_key(name)) == method_key(name)
