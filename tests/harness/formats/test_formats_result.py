"""Result files: round trip, and one test per validation rule with its exact message."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest
from format_testing import make_result

from harness.dataset import Result, SceneResult
from harness.errors import FileTooLargeError, FormatError
from harness.formats import RESULT_FORMAT, ResultExpectation, read_result, validate_result, write_result
from harness.forward import Spec


def _reject(path, expect, *, rule: str, where: str | None = None) -> str:
    with pytest.raises(FormatError) as info:
        validate_result(path, expect)
    assert info.value.rule == rule, info.value.message
    if where is not None:
        assert info.value.where == where
    return info.value.message


def _replace_x_hat(path, scene="s1", *, data=None, **create):
    """Re-create /scenes/<scene>/x_hat with other creation properties (valid values by default)."""
    with h5py.File(path, "a") as f:
        group = f["scenes"][scene]
        old = group["x_hat"][()]
        del group["x_hat"]
        if data is None and "shape" not in create:
            data = old
        group.create_dataset("x_hat", data=data, **create)


# -- writing and reading -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_keeps_maps_spec_and_method(dataset, expect, tmp_path, dtype):
    result = make_result(dataset, dtype=dtype)
    path = tmp_path / "r.h5"
    write_result(result, path)
    back = read_result(path, expect)
    assert back.method == "test method"
    assert set(back.scenes) == set(result.scenes)
    for scene_id, scene in result.scenes.items():
        assert back.scenes[scene_id].x_hat.dtype == dtype
        np.testing.assert_array_equal(back.scenes[scene_id].x_hat, scene.x_hat)
        assert back.scenes[scene_id].spec == scene.spec


def test_written_layout_follows_design(result_path):
    with h5py.File(result_path, "r") as f:
        assert f.attrs["format"] == RESULT_FORMAT
        assert f.attrs["format_version"] == 1
        assert set(f["scenes"]) == {"s0", "s1", "s2"}
        x = f["scenes/s0/x_hat"]
        assert x.shape == (6, 32, 32) and x.compression == "gzip"
        assert dict(f["scenes/s0/spec"].attrs) == pytest.approx(Spec(0.5, -0.01, 0.2, 0.03).as_dict())


def test_non_float_maps_are_stored_as_float32(dataset, expect, tmp_path):
    result = make_result(dataset)
    for scene in result.scenes.values():
        scene.x_hat = (scene.x_hat > 0.5).astype(np.int16)
    write_result(result, tmp_path / "r.h5")
    back = read_result(tmp_path / "r.h5", expect)
    assert back.scenes["s0"].x_hat.dtype == np.float32


def test_valid_result_passes(result_path, expect):
    validate_result(result_path, expect)


def test_extra_content_outside_scenes_is_ignored(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f.attrs["author"] = "someone"
        f.create_dataset("diagnostics/residual", data=np.full((100, 100), np.nan), fletcher32=True)
        f["scenes/s0"].create_dataset("x_hat_uncertainty", data=np.array([np.inf]))
    validate_result(result_path, expect)


def test_a_hard_link_cycle_is_walked_once(result_path, expect):
    with h5py.File(result_path, "a") as f:
        extra = f.create_group("extra")
        extra["loop"] = extra
    validate_result(result_path, expect)


def test_gzip_map_with_a_large_decompression_ratio_is_fine(result_path, expect):
    # All-zero maps compress ~1000×; with the tier's shape the decompressed size is bounded.
    _replace_x_hat(
        result_path, data=np.zeros((6, 32, 32), np.float32), chunks=(6, 32, 32), compression="gzip", compression_opts=9
    )
    validate_result(result_path, expect)


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_allowed_filters_pass(result_path, expect, compression):
    _replace_x_hat(result_path, chunks=(1, 32, 32), compression=compression, shuffle=True)
    validate_result(result_path, expect)


def test_contiguous_and_integer_spec_attrs_pass(result_path, expect):
    _replace_x_hat(result_path)  # no chunks: contiguous layout, read in row slabs
    with h5py.File(result_path, "a") as f:
        f["scenes/s0/spec"].attrs["peak_overlap"] = 0  # an integer is a real number
        f["scenes/s1/spec"].attrs["peak_overlap"] = np.array([0.25])  # size-1 array
    validate_result(result_path, expect)


# -- file-level rejections ---------------------------------------------------------------------


def test_file_over_the_size_cap_is_rejected_before_opening(tmp_path, expect):
    path = tmp_path / "big.h5"
    path.write_bytes(b"not even HDF5" * 1000)  # size is checked first: no "not HDF5" error
    small = ResultExpectation(**{**expect.as_dict(), "max_bytes": 1000})
    with pytest.raises(FileTooLargeError) as info:
        validate_result(path, small)
    assert info.value.message.startswith("the file is 12.7 KiB (13000 bytes), over the 1000 B limit")
    assert info.value.rule == "size_cap"


def test_text_file_renamed_h5_is_not_hdf5(tmp_path, expect):
    path = tmp_path / "result.h5"
    path.write_text("x_hat = [[0.1, 0.2]]\n")
    message = _reject(path, expect, rule="not_hdf5")
    assert message.startswith("not an HDF5 file (no HDF5 signature found)")


def test_empty_file_is_not_hdf5(tmp_path, expect):
    path = tmp_path / "result.h5"
    path.touch()
    assert _reject(path, expect, rule="not_hdf5").startswith("not an HDF5 file")


def test_truncated_hdf5_file_is_rejected(result_path, expect):
    data = result_path.read_bytes()
    result_path.write_bytes(data[: len(data) // 3])
    message = _reject(result_path, expect, rule="not_hdf5")
    assert "not an HDF5 file: it has an HDF5 signature but libhdf5 cannot open it" in message


def test_directory_is_rejected(tmp_path, expect):
    assert _reject(tmp_path, expect, rule="not_hdf5") == "the upload is not a regular file"


@pytest.mark.parametrize(
    ("value", "found"),
    [("edx-arena-measurement", "format 'edx-arena-measurement'"), (None, "no 'format' attribute")],
)
def test_wrong_or_missing_format_is_rejected(result_path, expect, value, found):
    with h5py.File(result_path, "a") as f:
        if value is None:
            del f.attrs["format"]
        else:
            f.attrs["format"] = value
    message = _reject(result_path, expect, rule="format", where="/")
    assert message == f"the root group has {found}; a result file needs the root attribute format = 'edx-arena-result'"


def test_wrong_format_version_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f.attrs["format_version"] = 2
    assert _reject(result_path, expect, rule="format_version") == (
        "the root group has format_version 2; this server reads format_version = 1"
    )


def test_overlong_method_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f.attrs["method"] = "m" * 500
    assert "'method' is 500 characters" in _reject(result_path, expect, rule="attribute")


def test_huge_root_attribute_is_rejected_without_reading_it(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f.attrs.create("format_version", data=np.ones(1000, np.int64))
    assert "must be a scalar" in _reject(result_path, expect, rule="attribute")


# -- scenes --------------------------------------------------------------------------------


def test_missing_scene_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        del f["scenes/s2"]
    assert _reject(result_path, expect, rule="missing_scene", where="/scenes/s2") == (
        "scene 's2' is missing: /scenes/s2 not found; every scene of the public tier (s0, s1, s2) needs a result"
    )


def test_extra_scene_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f.copy(f["scenes/s0"], "scenes/s3")
    assert _reject(result_path, expect, rule="extra_scene", where="/scenes/s3") == (
        "/scenes holds an unexpected scene 's3'; the public tier's scenes are s0, s1, s2"
    )


def test_missing_scenes_group_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f.move("scenes", "Scenes")
    assert _reject(result_path, expect, rule="missing") == "/scenes is missing; put one group per scene under /scenes"


def test_scene_that_is_a_dataset_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        del f["scenes/s1"]
        f["scenes/s1"] = np.zeros((6, 32, 32))
    assert _reject(result_path, expect, rule="missing").startswith("/scenes/s1 must be a group, not a dataset")


def test_missing_x_hat_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        del f["scenes/s0/x_hat"]
    assert _reject(result_path, expect, rule="missing", where="/scenes/s0/x_hat").startswith(
        "/scenes/s0/x_hat is missing"
    )


@pytest.mark.parametrize(
    "shape",
    [(6, 32, 31), (5, 32, 32), (6, 32 * 32), (1, 6, 32, 32)],
    ids=["width", "elements", "rank2", "rank4"],
)
def test_wrong_shape_or_rank_is_rejected(result_path, expect, shape):
    _replace_x_hat(result_path, data=np.zeros(shape, np.float32))
    assert _reject(result_path, expect, rule="shape", where="/scenes/s1/x_hat") == (
        f"/scenes/s1/x_hat has shape {shape}; the public tier expects (6, 32, 32) (elements, height, width)"
    )


def test_huge_declared_shape_is_rejected_from_metadata(result_path, expect):
    # 6 × 100000 × 100000 float32 declares 240 GB; one all-zero gzip chunk is written.
    _replace_x_hat(
        result_path,
        shape=(6, 100_000, 100_000),
        maxshape=(None, None, None),
        dtype="f4",
        chunks=(1, 2048, 2048),
        compression="gzip",
    )
    with h5py.File(result_path, "a") as f:
        f["scenes/s1/x_hat"][0, :2048, :2048] = 0.0
    assert os.path.getsize(result_path) < 1 << 20
    started = time.monotonic()
    message = _reject(result_path, expect, rule="shape", where="/scenes/s1/x_hat")
    assert time.monotonic() - started < 1.0
    assert message.startswith("/scenes/s1/x_hat has shape (6, 100000, 100000); the public tier expects (6, 32, 32)")


def test_oversized_chunk_is_rejected(result_path, expect):
    # Right shape, but resizable with a 256 MiB chunk: reading any part would inflate it whole.
    _replace_x_hat(result_path, maxshape=(None, None, None), chunks=(4, 4096, 4096), compression="gzip")
    message = _reject(result_path, expect, rule="chunk_size", where="/scenes/s1/x_hat")
    assert message.startswith(
        "/scenes/s1/x_hat declares chunks (4, 4096, 4096) of 256.0 MiB each; chunks may be at most 16.0 MiB"
    )


@pytest.mark.parametrize("dtype", ["f2", "i4", "c8", "u1"])
def test_wrong_dtype_is_rejected(result_path, expect, dtype):
    _replace_x_hat(result_path, data=np.zeros((6, 32, 32), dtype))
    assert _reject(result_path, expect, rule="dtype") == (
        f"/scenes/s1/x_hat has dtype {np.dtype(dtype)}; x_hat must be float32 or float64"
    )


def test_big_endian_float64_is_accepted(result_path, expect):
    _replace_x_hat(result_path, data=np.zeros((6, 32, 32), ">f8"))
    validate_result(result_path, expect)


@pytest.mark.parametrize(("bad", "count"), [(np.nan, 3), (np.inf, 1), (-np.inf, 2)])
def test_nonfinite_values_are_counted_and_rejected(result_path, expect, bad, count):
    with h5py.File(result_path, "a") as f:
        f["scenes/s2/x_hat"][0, 5, :count] = bad
    plural = "s" if count > 1 else ""
    assert _reject(result_path, expect, rule="nonfinite", where="/scenes/s2/x_hat") == (
        f"/scenes/s2/x_hat: scene 's2' has {count} non-finite value{plural} (NaN or inf) in x_hat; "
        "every value must be a finite number (use 0 where your method has no estimate)"
    )


def test_nonfinite_values_in_contiguous_float64_are_counted(result_path, expect):
    x = np.zeros((6, 32, 32))
    x[:, 31, 31] = np.nan
    _replace_x_hat(result_path, data=x)
    assert "has 6 non-finite values" in _reject(result_path, expect, rule="nonfinite")


# -- links and storage ---------------------------------------------------------------------


def test_external_link_is_rejected(result_path, expect, tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["x"] = np.zeros((6, 32, 32), np.float32)
    with h5py.File(result_path, "a") as f:
        del f["scenes/s0/x_hat"]
        f["scenes/s0/x_hat"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
    assert _reject(result_path, expect, rule="link", where="/scenes/s0/x_hat") == (
        "'/scenes/s0/x_hat' is an external link to another file; links are not allowed, store the data inside this file"
    )


def test_soft_link_anywhere_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f["notes/alias"] = h5py.SoftLink("/scenes/s0")
    assert _reject(result_path, expect, rule="link", where="/notes/alias") == (
        "'/notes/alias' is a soft link; links are not allowed, store the object itself at that path"
    )


def test_dangling_external_link_outside_scenes_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f["secret"] = h5py.ExternalLink("/etc/passwd", "/")
    assert "external link" in _reject(result_path, expect, rule="link", where="/secret")


def test_external_storage_is_rejected(result_path, expect, tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.zeros((6, 32, 32), np.float32).tobytes())
    _replace_x_hat(result_path, shape=(6, 32, 32), dtype="f4", external=[(str(raw), 0, h5py.h5f.UNLIMITED)])
    assert _reject(result_path, expect, rule="external_storage", where="/scenes/s1/x_hat") == (
        "/scenes/s1/x_hat keeps its data in external raw files; store the data inside the HDF5 file"
    )


def test_virtual_dataset_is_rejected(result_path, expect, tmp_path):
    with h5py.File(tmp_path / "source.h5", "w") as src:
        src["x"] = np.zeros((6, 32, 32), np.float32)
    layout = h5py.VirtualLayout(shape=(6, 32, 32), dtype="f4")
    layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "x", shape=(6, 32, 32))
    with h5py.File(result_path, "a") as f:
        del f["scenes/s1/x_hat"]
        f["scenes/s1"].create_virtual_dataset("x_hat", layout)
    assert _reject(result_path, expect, rule="virtual", where="/scenes/s1/x_hat") == (
        "/scenes/s1/x_hat is a virtual dataset (it maps data from other datasets or files); write the values themselves"
    )


@pytest.mark.parametrize(
    ("create", "label"),
    [
        ({"fletcher32": True, "chunks": (1, 32, 32)}, "fletcher32"),
        ({"scaleoffset": 4, "chunks": (1, 32, 32)}, "scaleoffset"),
    ],
)
def test_disallowed_filter_is_rejected(result_path, expect, create, label):
    _replace_x_hat(result_path, **create)
    assert _reject(result_path, expect, rule="filter", where="/scenes/s1/x_hat") == (
        f"/scenes/s1/x_hat uses the {label} filter; only gzip, lzf and shuffle are allowed, "
        "re-write it with compression='gzip' (optionally shuffle=True)"
    )


def test_unknown_filter_id_is_rejected(result_path, expect):
    _replace_x_hat(
        result_path, shape=(6, 32, 32), dtype="f4", chunks=(1, 32, 32), compression=32_123, allow_unknown_filter=True
    )
    with h5py.File(result_path, "a") as f:
        dset = f["scenes/s1/x_hat"]
        dset.id.write_direct_chunk((0, 0, 0), b"\x00" * 16)
    assert _reject(result_path, expect, rule="filter").startswith(
        "/scenes/s1/x_hat uses the unknown filter id 32123 filter; only gzip, lzf and shuffle are allowed"
    )


def test_too_many_objects_are_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        junk = f.create_group("junk")
        for i in range(10_001):
            junk[f"g{i}"] = f["scenes/s0/spec"]  # hard links to one group: cheap to make
    assert _reject(result_path, expect, rule="too_many_objects") == (
        "the file holds more than 10000 objects; a result needs one group and one dataset per scene"
    )


def test_corrupt_chunk_is_reported_as_unreadable(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f["scenes/s1/x_hat"].id.write_direct_chunk((0, 0, 0), b"this is not deflate data")
    message = _reject(result_path, expect, rule="unreadable", where="/scenes/s1/x_hat")
    assert message.startswith("/scenes/s1/x_hat could not be read (corrupt or unsupported HDF5 content")


# -- spec ----------------------------------------------------------------------------------


def test_missing_spec_group_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        del f["scenes/s0/spec"]
    assert _reject(result_path, expect, rule="missing", where="/scenes/s0/spec") == (
        "/scenes/s0/spec is missing; add a group with attributes absorption_correction_error, "
        "detector_solid_angle, peak_overlap, bremsstrahlung_background"
    )


def test_missing_spec_attribute_is_rejected(result_path, expect):
    with h5py.File(result_path, "a") as f:
        del f["scenes/s0/spec"].attrs["peak_overlap"]
    assert _reject(result_path, expect, rule="attribute", where="/scenes/s0/spec").startswith(
        "/scenes/s0/spec has no 'peak_overlap' attribute; the spec group needs the attributes"
    )


@pytest.mark.parametrize(
    ("value", "rule", "text"),
    [
        (np.nan, "nonfinite", "attribute 'detector_solid_angle' is nan; it must be finite"),
        (np.inf, "nonfinite", "attribute 'detector_solid_angle' is inf; it must be finite"),
        ("0.1", "attribute", "attribute 'detector_solid_angle' must be one real number (got a string)"),
        (np.array([0.1, 0.2]), "attribute", "must be one real number (got float64 with shape (2,))"),
        (np.bool_(True), "attribute", "must be one real number (got bool with shape ())"),
        (np.complex64(1j), "attribute", "must be one real number (got complex64 with shape ())"),
    ],
)
def test_bad_spec_values_are_rejected(result_path, expect, value, rule, text):
    with h5py.File(result_path, "a") as f:
        f["scenes/s2/spec"].attrs["detector_solid_angle"] = value
    assert text in _reject(result_path, expect, rule=rule, where="/scenes/s2/spec")


# -- read_result -----------------------------------------------------------------------------


def test_read_result_validates_first(result_path, expect):
    with h5py.File(result_path, "a") as f:
        f["scenes/s0/x_hat"][0, 0, 0] = np.nan
    with pytest.raises(FormatError, match="non-finite"):
        read_result(result_path, expect)


def test_expectation_for_dataset(dataset, expect):
    assert expect == ResultExpectation("public", ("s0", "s1", "s2"), 6, 32, 32, 8 << 20)
    assert ResultExpectation.from_mapping(expect.as_dict()) == expect
    assert expect.shape == (6, 32, 32)


def test_write_result_rejects_bad_scene_ids_and_ranks(tmp_path):
    bad_id = Result({"../s0": SceneResult(np.zeros((6, 4, 4)), Spec())})
    with pytest.raises(ValueError, match=r"scene id '\.\./s0' must match"):
        write_result(bad_id, tmp_path / "r.h5")
    bad_rank = Result({"s0": SceneResult(np.zeros((6, 16)), Spec())})
    with pytest.raises(ValueError, match=r"must be \(E, H, W\); got shape \(6, 16\)"):
        write_result(bad_rank, tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()


def test_a_missing_file_is_not_blamed_on_the_sender(tmp_path, expect):
    # A stored file that vanished is the platform's fault (retried, not charged), not "not HDF5".
    for read in (validate_result, read_result):
        with pytest.raises(FileNotFoundError, match="no such file"):
            read(tmp_path / "gone.h5", expect)
