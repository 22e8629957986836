"""Open a measurement file's scene in HyperSpy / exspy as an EDS spectrum image.

HyperSpy and exspy are optional (``pip install 'edx-arena[hyperspy]'``) and imported only when a
function here is called, so the harness never depends on them.

How the file maps onto the signal (design §4, :mod:`harness.formats._measurement`):

=============================  ===================================================
file                           ``EDSTEMSpectrum``
=============================  ===================================================
``/scenes/<id>/y`` (H, W, C)   ``data`` (H, W, C), float32 counts, unchanged
``/energy_keV`` (C,)           signal axis "Energy": offset = E_0 = e0 + de/2 (the
                               first channel *centre*), scale = de, units keV
scan rows, columns             navigation axes "y" (H) and "x" (W), pixels
``/elements``                  ``metadata.Sample.elements``
``/lines``                     ``metadata.Sample.xray_lines`` (``Si_Ka``, ``W_Ma``…)
``/operator`` beam_energy_keV  ``metadata…TEM.beam_energy`` (keV)
``/operator`` fwhm_ref_eV      ``metadata…EDS.energy_resolution_MnKa`` (eV); the
                               reference energy 5898.7 eV *is* Mn Kα
root, ``/operator`` and        ``original_metadata`` (tier, operator constants,
``/spec`` attrs, scene         published θ ranges, calibration composition, true θ
                               when the file has the truth)
=============================  ===================================================

So the channel ``c`` sits at ``offset + c·scale = e0 + (c + ½)·de`` keV, exactly the file's
``/energy_keV[c]``, and HyperSpy's line windows (``get_lines_intensity``) land on the lines the
forward model put there.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

from harness.errors import FormatError

from ._layout import MEASUREMENT_FORMAT, RESULT_FORMAT, SPEC_TRUE_PREFIX

__all__ = ["to_eds_signal", "to_element_maps"]

#: The energy axis must agree with ``e0 + (c + ½)·de`` to this many keV (float64 round-off).
_AXIS_TOLERANCE_KEV = 1e-9


def _import_exspy():
    try:
        import exspy
        import hyperspy.api as hs
    except ImportError as exc:  # optional extra: say how to get it instead of a bare traceback
        raise ImportError(
            f"loading into HyperSpy needs hyperspy and exspy ({exc}); install them with "
            "`pip install 'edx-arena[hyperspy]'` (or `pip install hyperspy exspy`)"
        ) from exc
    return hs, exspy


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scene_group(f: h5py.File, path: str | os.PathLike, scene_id: str, fmt: str) -> h5py.Group:
    if _str(f.attrs.get("format", "")) != fmt:
        raise FormatError(
            f"{path} is not an {fmt} file (root attribute format={f.attrs.get('format')!r})", rule="format"
        )
    scenes = f.get("scenes")
    available = sorted(scenes) if isinstance(scenes, h5py.Group) else []
    if scene_id not in available:
        raise FormatError(
            f"{path} has no scene {scene_id!r}; its scenes are {', '.join(available) or 'none'}",
            where=f"/scenes/{scene_id}",
            rule="missing_scene",
        )
    return scenes[scene_id]


def _elements(f: h5py.File) -> list[str]:
    return [_str(e) for e in f["elements"][()]]


def to_eds_signal(path: str | os.PathLike, scene_id: str):
    """One scene's spectrum cube as an ``exspy.signals.EDSTEMSpectrum`` with the file's energy axis.

    Parameters
    ----------
    path : str or os.PathLike
        A measurement file (``edx-arena-measurement``: a tier download, the container's
        ``/input/measurement.h5`` or an organizer's full file).
    scene_id : str
        The scene, e.g. ``"public-s0"``.

    Returns
    -------
    exspy.signals.EDSTEMSpectrum
        ``data`` is ``/scenes/<scene_id>/y`` (H, W, C) float32 counts, unchanged (so
        ``s.data.sum()`` is the file's total count). Signal axis "Energy" in keV with
        ``offset = /energy_keV[0] = e0 + de/2`` and ``scale = de``; navigation axes "x" (W) and
        "y" (H) in pixels (HyperSpy lists navigation axes x first: ``s.axes_manager.navigation_shape
        == (W, H)``). ``metadata.Sample`` holds the elements and X-ray lines of ``/elements`` and
        ``/lines``, ``metadata.Acquisition_instrument.TEM`` the beam energy (keV) and the detector
        resolution at Mn Kα (eV); ``original_metadata`` keeps the tier, the operator constants,
        the published θ ranges, the calibration strip's composition and, in a file with the
        truth, the true θ.

    Raises
    ------
    ImportError
        hyperspy or exspy is not installed (the message says how to install them).
    harness.errors.FormatError
        Not a measurement file, no such scene (the message lists the file's scenes), or an
        energy axis that is not uniform.
    """
    _hs, exspy = _import_exspy()
    with h5py.File(path, "r") as f:
        group = _scene_group(f, path, scene_id, MEASUREMENT_FORMAT)
        energy = np.asarray(f["energy_keV"][()], dtype=np.float64)
        e0, de = float(f["energy_keV"].attrs["e0_keV"]), float(f["energy_keV"].attrs["de_keV"])
        expected = e0 + (np.arange(energy.size) + 0.5) * de
        if not np.allclose(energy, expected, rtol=0, atol=_AXIS_TOLERANCE_KEV):
            raise FormatError(
                f"{path}: /energy_keV is not e0_keV + (c + 0.5)·de_keV, so it is no HyperSpy linear axis",
                where="/energy_keV",
                rule="energy_axis",
            )
        y = group["y"][()]
        elements = _elements(f)
        lines = [f"{_str(row['element'])}_{_str(row['line'])}" for row in f["lines"][()]]
        operator = {k: float(v) for k, v in f["operator"].attrs.items() if k != "operator_version"}
        original: dict[str, Any] = {
            "edx_arena": {
                "format": MEASUREMENT_FORMAT,
                "tier": _str(f.attrs.get("tier", "")),
                "scene_id": scene_id,
                # HyperSpy sorts metadata.Sample.elements; this is the file's (the maps') order.
                "elements": elements,
                "operator_version": _str(f.attrs.get("operator_version", "")),
                "content_hash": _str(f.attrs.get("content_hash", "")),
                "e0_keV": e0,
                "de_keV": de,
            },
            "operator": operator,
            "spec_ranges": {k: [float(x) for x in v] for k, v in f["spec/ranges"].attrs.items()},
            "reference_x": dict(zip(elements, (float(v) for v in group["reference_x"][()]))),
            "reference_rows": int(np.asarray(group["reference_mask"][()]).all(axis=1).sum()),
        }
        spec_true = {
            k[len(SPEC_TRUE_PREFIX) :]: float(v) for k, v in group.attrs.items() if k.startswith(SPEC_TRUE_PREFIX)
        }
        if spec_true:
            original["spec_true"] = spec_true

    h, w, c = y.shape
    s = exspy.signals.EDSTEMSpectrum(
        y,
        axes=[
            {"name": "y", "size": h, "offset": 0.0, "scale": 1.0, "units": "px", "navigate": True},
            {"name": "x", "size": w, "offset": 0.0, "scale": 1.0, "units": "px", "navigate": True},
            # offset is the first channel's centre, not e0: HyperSpy axis values are bin centres.
            {"name": "Energy", "size": c, "offset": float(energy[0]), "scale": de, "units": "keV", "navigate": False},
        ],
        original_metadata=original,
    )
    s.metadata.General.title = f"{original['edx_arena']['tier']} {scene_id}"
    s.metadata.General.original_filename = os.fspath(path)
    s.metadata.Signal.quantity = "X-rays (Counts)"
    s.set_microscope_parameters(
        beam_energy=operator.get("beam_energy_keV", 20.0),
        energy_resolution_MnKa=operator.get("fwhm_ref_eV", 130.0),
    )
    s.set_elements(elements)
    s.set_lines(lines, only_one=False, only_lines=None)
    # set_lines may add HyperSpy's own choice of lines; keep exactly the forward model's.
    s.metadata.Sample.xray_lines = sorted(lines)
    return s


def to_element_maps(path: str | os.PathLike, scene_id: str, *, elements: list[str] | None = None) -> list:
    """Element maps of one scene as HyperSpy ``Signal2D`` images, one per element of ``/elements``.

    Reads ``x_true`` from a measurement file with the truth (Public download, organizer file) or
    ``x_hat`` from a result file (``edx-arena-result``), so a HyperSpy quantification can be put
    beside the truth. Each image is (H, W) in pixels, titled with its element, values the
    fraction in [0, 1] as stored. A result file has no ``/elements``: pass the measurement's
    (``to_eds_signal(...).original_metadata.edx_arena.elements``) as ``elements`` to title its
    maps; without it they are ``element 0``, ``element 1``…
    """
    hs, _ = _import_exspy()
    with h5py.File(path, "r") as f:
        fmt = _str(f.attrs.get("format", ""))
        if fmt == RESULT_FORMAT:
            group = _scene_group(f, path, scene_id, RESULT_FORMAT)
            name = "x_hat"
        else:
            group = _scene_group(f, path, scene_id, MEASUREMENT_FORMAT)
            name = "x_true"
            elements = elements or _elements(f)
        if name not in group:
            raise FormatError(
                f"{path} has no /scenes/{scene_id}/{name} (a truth-free view has no element maps)",
                where=f"/scenes/{scene_id}/{name}",
                rule="missing_dataset",
            )
        x = np.asarray(group[name][()])
    if elements is not None and len(elements) != x.shape[0]:
        raise ValueError(f"{len(elements)} element names for {x.shape[0]} maps in {path}")
    labels = list(elements) if elements is not None else [f"element {i}" for i in range(x.shape[0])]
    maps = []
    for label, image in zip(labels, x):
        m = hs.signals.Signal2D(
            image,
            axes=[
                {"name": "y", "size": image.shape[0], "units": "px"},
                {"name": "x", "size": image.shape[1], "units": "px"},
            ],
        )
        m.metadata.General.title = label
        maps.append(m)
    return maps
