"""A measurement file's scene opened in HyperSpy/exspy: the energy axis is the file's, the
counts are unchanged, the lines sit where the forward model put them, metadata comes along."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from harness.errors import FormatError
from harness.formats import write_measurement, write_result
from harness.formats.hyperspy import to_eds_signal, to_element_maps
from harness.forward import ELEMENTS, LINES
from harness.scenes import build_tier
from harness.solvers import solve_dataset

# HyperSpy 2.5 warns about its own internal imports; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Importing `:UserWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hyperspy")
    dataset = build_tier("public", seed=3, preset="small")
    full, view, result = d / "full.h5", d / "dev-view.h5", d / "result.h5"
    write_measurement(dataset, full, include_truth=True)
    write_measurement(dataset.participant_view(with_truth=False), view, include_truth=False)
    write_result(solve_dataset(dataset.without_truth(), solver="nnls"), result)
    return dataset, full, view, result


def test_energy_axis_is_the_files(files):
    _, full, _, _ = files
    s = to_eds_signal(full, "public-s0")
    with h5py.File(full) as f:
        energy = f["energy_keV"][()]
        e0, de = f["energy_keV"].attrs["e0_keV"], f["energy_keV"].attrs["de_keV"]
    axis = s.axes_manager.signal_axes[0]
    assert (axis.name, axis.units, axis.size) == ("Energy", "keV", energy.size)
    # The offset is the first channel's centre e0 + de/2 (HyperSpy axis values are bin centres).
    assert axis.offset == pytest.approx(e0 + de / 2, abs=1e-12) and axis.offset == pytest.approx(energy[0], abs=1e-12)
    assert axis.scale == pytest.approx(de, abs=1e-12)
    np.testing.assert_allclose(axis.axis, energy, rtol=0, atol=1e-9)
    assert s.metadata.Signal.signal_type == "EDS_TEM" and type(s).__name__ == "EDSTEMSpectrum"


def test_counts_and_orientation_are_unchanged(files):
    _, full, _, _ = files
    s = to_eds_signal(full, "public-s1")
    with h5py.File(full) as f:
        y = f["scenes/public-s1/y"][()]
    assert s.data.dtype == np.float32 and s.data.shape == y.shape
    assert s.data.sum(dtype=np.float64) == y.sum(dtype=np.float64)
    h, w, _ = y.shape
    assert s.axes_manager.navigation_shape == (w, h)
    assert [(a.name, a.units, a.scale, a.offset) for a in s.axes_manager.navigation_axes] == [
        ("x", "px", 1, 0),
        ("y", "px", 1, 0),
    ]
    # inav is (x, y): column 5 of row 2 is y[2, 5].
    np.testing.assert_array_equal(s.inav[5, 2].data, y[2, 5])
    # Summing over the scan in HyperSpy gives the file's mean spectrum times the pixel count.
    np.testing.assert_allclose(s.sum().data, y.sum(axis=(0, 1), dtype=np.float64), rtol=1e-5)


@pytest.mark.parametrize("line", ["Mo_Ka", "W_La", "W_Lb1"])
def test_isolated_lines_peak_at_their_energy_in_keV(files, line):
    """Selecting by keV (isig with floats) finds the peak where the forward model put the line,
    within one channel: the axis is physically right, not just self-consistent."""
    _, full, _, _ = files
    element, name = line.split("_")
    energy = dict((n, e) for n, e, _ in LINES[element])[name]
    s = to_eds_signal(full, "public-s0").sum()
    window = s.isig[energy - 0.4 : energy + 0.4]
    axis = window.axes_manager.signal_axes[0].axis
    assert abs(axis[int(np.argmax(window.data))] - energy) <= s.axes_manager.signal_axes[0].scale


def test_metadata_elements_lines_microscope(files):
    dataset, full, view, _ = files
    s = to_eds_signal(full, "public-s2")
    assert sorted(s.metadata.Sample.elements) == sorted(ELEMENTS)
    assert s.original_metadata.edx_arena.elements == list(ELEMENTS)  # the maps' order
    expected_lines = sorted(f"{el}_{n}" for el in ELEMENTS for n, _, _ in LINES[el])
    assert list(s.metadata.Sample.xray_lines) == expected_lines
    tem = s.metadata.Acquisition_instrument.TEM
    assert tem.beam_energy == dataset.constants.beam_energy_keV
    assert tem.Detector.EDS.energy_resolution_MnKa == dataset.constants.fwhm_ref_eV
    om = s.original_metadata
    assert (om.edx_arena.tier, om.edx_arena.scene_id, om.reference_rows) == ("public", "public-s2", 4)
    true = dataset.scenes[2].spec_true.as_dict()
    assert {k: om.spec_true[k] for k in true} == pytest.approx(true)
    assert "spec_true" not in to_eds_signal(view, "public-s2").original_metadata
    # HyperSpy's own tools run on it: one intensity map per line, on the scan grid.
    intensities = s.get_lines_intensity(["Ti_Ka"])
    assert intensities[0].data.shape == (32, 32) and intensities[0].data.sum() > 0


def test_element_maps_from_truth_and_result(files):
    dataset, full, view, result = files
    maps = to_element_maps(full, "public-s0")
    assert [m.metadata.General.title for m in maps] == list(ELEMENTS)
    np.testing.assert_array_equal(np.stack([m.data for m in maps]), dataset.scenes[0].x_true.astype(np.float32))
    with h5py.File(result) as f:
        x_hat = f["scenes/public-s0/x_hat"][()]
    mine = to_element_maps(result, "public-s0", elements=list(ELEMENTS))
    assert [m.metadata.General.title for m in mine] == list(ELEMENTS)
    np.testing.assert_array_equal(np.stack([m.data for m in mine]), x_hat)
    assert to_element_maps(result, "public-s0")[0].metadata.General.title == "element 0"
    with pytest.raises(FormatError, match="a truth-free view has no element maps"):
        to_element_maps(view, "public-s0")


def test_bad_inputs_say_what_is_wrong(files):
    _, full, _, result = files
    with pytest.raises(FormatError, match="has no scene 'dev-s0'; its scenes are public-s0, public-s1, public-s2"):
        to_eds_signal(full, "dev-s0")
    with pytest.raises(FormatError, match="is not an edx-arena-measurement file"):
        to_eds_signal(result, "public-s0")


def test_missing_hyperspy_gives_the_install_command(files, monkeypatch):
    _, full, _, _ = files
    monkeypatch.setitem(sys.modules, "exspy", None)  # makes `import exspy` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'edx-arena\[hyperspy\]'"):
        to_eds_signal(full, "public-s0")
