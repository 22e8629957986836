"""Refusals of a result a sandboxed run wrote (harness.formats.validate_output): every message is
one of output_error_messages(expect), a finite vocabulary of rule sentences and contract paths,
whatever names and values the file holds; an upload's message stays as precise as before."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from harness.errors import FormatError
from harness.formats import output_error_message, output_error_messages, validate_output, validate_result

#: 1,000 characters of "anything" the container wants its owner to read.
MARK = ("hiddenDataQ" * 91)[:1000]


def _compound(name: str) -> np.dtype:
    return np.dtype([(name, "<f4")])


def _long_x_hat_field(f):
    del f["scenes/s1/x_hat"]
    f["scenes/s1"].create_dataset("x_hat", shape=(6, 32, 32), dtype=_compound(MARK))


def _long_extra_scene(f):
    f.copy(f["scenes/s0"], f"scenes/{MARK}")


def _long_spec_attribute_field(f):
    f["scenes/s2/spec"].attrs["peak_overlap"] = np.zeros((), dtype=_compound(MARK))


def _long_soft_link(f):
    f[f"scenes/s0/{MARK[:900]}"] = h5py.SoftLink("/nowhere")


def _long_external_link(f):
    f[f"junk{MARK[:500]}"] = h5py.ExternalLink(MARK[:900], "/x")


def _deep_long_groups(f):
    group = f
    for i in range(40):
        group = group.create_group(f"{MARK[:40]}{i}")


def _shape_carries_numbers(f):
    del f["scenes/s1/x_hat"]
    f["scenes/s1"].create_dataset("x_hat", shape=(123456789, 987654321, 1), dtype="f4", chunks=(1, 1024, 1))


def _huge_method(f):
    f.attrs["method"] = "m" * 4321


def _unknown_root_attribute_and_bad_format(f):
    f.attrs[MARK] = MARK
    f.attrs["format"] = MARK


def _nonfinite_count(f):
    data = f["scenes/s0/x_hat"][()]
    data.flat[:4321] = np.nan
    f["scenes/s0/x_hat"][...] = data


def _wrong_dtype_string(f):
    del f["scenes/s1/x_hat"]
    f["scenes/s1"].create_dataset("x_hat", shape=(6, 32, 32), dtype=h5py.string_dtype())


def _unknown_filter(f):
    del f["scenes/s1/x_hat"]
    f["scenes/s1"].create_dataset(
        "x_hat", shape=(6, 32, 32), dtype="f4", chunks=(1, 32, 32), compression=31_337, allow_unknown_filter=True
    )


HOSTILE = {
    "x_hat compound field name": (_long_x_hat_field, "dtype"),
    "extra scene name": (_long_extra_scene, "extra_scene"),
    "spec attribute compound field name": (_long_spec_attribute_field, "attribute"),
    "soft link name": (_long_soft_link, "link"),
    "external link name and target": (_long_external_link, "link"),
    "deep group names": (_deep_long_groups, "too_many_objects"),
    "declared shape": (_shape_carries_numbers, "shape"),
    "method length": (_huge_method, "attribute"),
    "unknown attribute and format value": (_unknown_root_attribute_and_bad_format, "format"),
    "non-finite count": (_nonfinite_count, "nonfinite"),
    "string dtype": (_wrong_dtype_string, "dtype"),
    "filter id": (_unknown_filter, "filter"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_refused_output_says_nothing_the_file_holds(result_path, expect, case):
    mutate, rule = HOSTILE[case]
    with h5py.File(result_path, "a") as f:
        mutate(f)
    with pytest.raises(FormatError) as upload:
        validate_result(result_path, expect)
    with pytest.raises(FormatError) as output:
        validate_output(result_path, expect)
    assert upload.value.rule == output.value.rule == rule, upload.value.message
    message = output.value.message
    assert message in output_error_messages(expect)
    assert "hiddenData" not in message and output.value.where in (
        "file",
        "/",
        "/scenes",
        "/scenes/s0/x_hat",
        "/scenes/s1/x_hat",
        "/scenes/s0",
        "/scenes/s1",
        "/scenes/s2/spec",
    )
    for number in ("123456789", "987654321", "4321", "31337"):
        assert number not in message
    # What an upload is told is unchanged: precise, quoting the file (it is the participant's own).
    if case == "x_hat compound field name":
        assert "hiddenData" in upload.value.message
    if case == "declared shape":
        assert "123456789" in upload.value.message


def test_messages_name_contract_paths_and_the_tiers_own_figures(result_path, expect):
    with h5py.File(result_path, "a") as f:
        _shape_carries_numbers(f)
    with pytest.raises(FormatError) as info:
        validate_output(result_path, expect)
    assert info.value.message == (
        "/scenes/s1/x_hat has the wrong shape; the tier expects (6, 32, 32) (elements, height, width)"
    )
    with h5py.File(result_path, "a") as f:
        del f["scenes/s1/x_hat"]
        f["scenes/s1"].create_dataset("x_hat", data=np.zeros((6, 32, 32), np.float32))
        f["scenes/s2/spec"].attrs["peak_overlap"] = np.nan
    with pytest.raises(FormatError) as info:
        validate_output(result_path, expect)
    assert info.value.message.startswith("/scenes/s2/spec attribute 'peak_overlap' holds NaN or inf")


def test_a_location_outside_the_contract_is_never_named(expect):
    for where, attribute in (("/scenes/evil", None), ("/scenes/s0/x_hat/evil", None), ("/scenes/s0/spec", "evil")):
        exc = FormatError("quoted: evil", where=where, rule="missing", attribute=attribute)
        message = output_error_message(exc, expect)
        assert "evil" not in message and "its name is not shown" in message
    unknown = output_error_message(FormatError("evil", rule="a rule added later"), expect)
    assert unknown == "it breaks the edx-arena-result format" and unknown in output_error_messages(expect)


def test_the_vocabulary_is_small(expect):
    # Its log2 is the message's term of the exfiltration budget (docs/sandbox.md).
    assert math.log2(len(output_error_messages(expect))) < 10
