"""Measurement files (design §4): write, read, validate organizer uploads, import truth maps.

Layout (``edx-arena-measurement``, format_version 1)::

    /                        attrs format, format_version, operator_version, tier, preset,
                             content_hash (when known), seed (truth files only)
    /elements                (E,) variable-length UTF-8 strings, the map order
    /lines                   (L,) compound table: element S8, line S8, energy_keV f8, weight f8
    /energy_keV              (C,) float64 channel centres; attrs e0_keV, de_keV
    /spec/nominal            attrs: every θ parameter = 0.0
    /spec/ranges             attrs: every θ parameter = [lo, hi] (float64 pair)
    /operator                attrs: every OperatorConstants field, operator_version
    /operator/nominal_matrix (E, C) float64, M(θ=0): expected counts per unit fraction
    /scenes/<id>/y               (H, W, C) float32, chunked by row blocks (≤ 1 MiB), gzip + shuffle
    /scenes/<id>/reference_mask  (H, W) bool, the calibration strip
    /scenes/<id>/reference_x     (E,) float64, its published composition
    truth files only:
    /scenes/<id>/x_true          (E, H, W) float32, one gzip chunk per element map
    /scenes/<id>  attrs spec_true/<parameter>  the true θ (float64)

The seed is written only with the truth: a Dev or Hidden seed regenerates the truth. The
content hash is written in both views: it is a sha256 of the full dataset, which names the
dataset in score rows and cannot be inverted. ``preset`` and ``/energy_keV`` attrs let a
participant rebuild H(θ) for any θ (:func:`operator_from_measurement`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields

import h5py
import numpy as np

from harness.dataset import Scene, TierDataset
from harness.errors import FormatError
from harness.forward import ELEMENTS, LINES, OPERATOR_VERSION, ForwardModel, OperatorConstants, Spec, energy_axis
from harness.tiers import PRESETS, SPEC_PARAMETERS, TIERS, Preset

from ._atomic import atomic_hdf5
from ._layout import FORMAT_VERSION, LINES_DTYPE, MEASUREMENT_FORMAT, SPEC_TRUE_PREFIX
from ._safety import (
    MISSING,
    SCENE_ID_PATTERN,
    check_format_version,
    check_readable_dataset,
    check_size,
    check_tree,
    iter_blocks,
    open_hdf5,
    read_attr,
    read_float_attr,
    read_int_attr,
    read_string_attr,
    reading_errors,
    require_dataset,
    require_group,
    show_name,
)

__all__ = [
    "MAX_CHANNELS",
    "MAX_SCENES",
    "MAX_SIDE",
    "operator_from_measurement",
    "read_measurement",
    "read_truth_maps",
    "validate_measurement",
    "write_measurement",
    "write_run_view",
]

#: Plausibility bounds for organizer files: larger declared sizes are rejected from metadata.
MAX_SIDE = 4096
MAX_CHANNELS = 65_536
MAX_SCENES = 64
#: Target uncompressed size of one ``y`` chunk (a block of full rows).
_Y_CHUNK_BYTES = 1 << 20
_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
#: Tolerance of the stored nominal matrix against the one rebuilt from the stored constants.
_MATRIX_RTOL = 1e-6


# -- writing ---------------------------------------------------------------------------------


def write_measurement(dataset: TierDataset, path: str | os.PathLike, *, include_truth: bool) -> None:
    """Write ``dataset`` as a measurement file, atomically (temp file + rename).

    Parameters
    ----------
    dataset : TierDataset
        The tier; with ``include_truth`` it must carry ``x_true`` and ``spec_true``.
    path : path-like
        Target file; it is replaced only once the new file is complete.
    include_truth : bool
        Write ``x_true``, ``spec_true/*`` and the seed (organizer and Public files). False
        gives the Dev download / container input.
    """
    if include_truth and not dataset.has_truth:
        raise ValueError(
            "include_truth=True but the dataset has no truth; pass include_truth=False for a truth-free view"
        )
    model = dataset.operator()
    with atomic_hdf5(path) as f:
        f.attrs["format"] = MEASUREMENT_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["operator_version"] = dataset.operator_version
        f.attrs["tier"] = dataset.tier
        f.attrs["preset"] = dataset.preset.name
        if dataset.content_hash:
            f.attrs["content_hash"] = dataset.content_hash
        if include_truth and dataset.seed is not None:
            f.attrs["seed"] = np.int64(dataset.seed)
        f.create_dataset("elements", data=list(dataset.elements), dtype=h5py.string_dtype())
        rows = [
            (el.encode(), line.encode(), energy, weight)
            for el in dataset.elements
            for line, energy, weight in LINES[el]
        ]
        f.create_dataset("lines", data=np.array(rows, dtype=LINES_DTYPE))
        energy = f.create_dataset("energy_keV", data=model.energy_keV)
        energy.attrs["e0_keV"] = float(dataset.preset.e0_keV)
        energy.attrs["de_keV"] = float(dataset.preset.de_keV)
        spec = f.create_group("spec")
        nominal = spec.create_group("nominal")
        for name, value in Spec().as_dict().items():
            nominal.attrs[name] = value
        ranges = spec.create_group("ranges")
        for name in SPEC_PARAMETERS:
            ranges.attrs[name] = np.asarray(dataset.ranges[name], dtype=np.float64)
        operator = f.create_group("operator")
        operator.attrs["operator_version"] = dataset.operator_version
        for name, value in dataset.constants.as_dict().items():
            operator.attrs[name] = value
        operator.create_dataset("nominal_matrix", data=model.matrix(Spec()))
        scenes = f.create_group("scenes")
        for scene in dataset.scenes:
            _write_scene(scenes, scene, include_truth=include_truth)


def write_run_view(dataset: TierDataset, path: str | os.PathLike) -> None:
    """Write what a sandboxed run reads as ``/input/measurement.h5``: the participant view
    without truth (no ``x_true``, no ``spec_true/*``, no seed), whatever the tier, atomically.

    A container never gets the truth, not even for a tier whose download carries it (Public):
    a solver that found ``x_true`` in its input would score perfectly on a server-run tier.
    The server's run views and ``edx-arena run`` both write their input here.
    """
    write_measurement(dataset.participant_view(with_truth=False), path, include_truth=False)


def _write_scene(scenes: h5py.Group, scene: Scene, *, include_truth: bool) -> None:
    if not SCENE_ID_PATTERN.fullmatch(scene.scene_id):
        raise ValueError(f"scene id {scene.scene_id!r} must match {SCENE_ID_PATTERN.pattern}")
    group = scenes.create_group(scene.scene_id)
    y = np.asarray(scene.y, dtype=np.float32)
    h, w, c = y.shape
    rows = max(1, min(h, _Y_CHUNK_BYTES // max(1, w * c * 4)))
    group.create_dataset("y", data=y, chunks=(rows, w, c), compression="gzip", compression_opts=4, shuffle=True)
    group.create_dataset("reference_mask", data=np.asarray(scene.reference_mask, dtype=bool))
    group.create_dataset("reference_x", data=np.asarray(scene.reference_x, dtype=np.float64))
    if include_truth:
        x = np.asarray(scene.x_true, dtype=np.float32)
        group.create_dataset(
            "x_true", data=x, chunks=(1, *x.shape[1:]), compression="gzip", compression_opts=4, shuffle=True
        )
        assert scene.spec_true is not None  # include_truth is checked against the dataset above
        for name, value in scene.spec_true.as_dict().items():
            group.attrs[SPEC_TRUE_PREFIX + name] = value


# -- the header (everything but the scenes' values) --------------------------------------------


@dataclass
class _Header:
    tier: str
    preset_name: str
    operator_version: str
    elements: tuple[str, ...]
    e0_keV: float
    de_keV: float
    channels: int
    constants: OperatorConstants
    ranges: dict[str, tuple[float, float]]
    content_hash: str
    seed: int | None
    scene_ids: list[str]

    def preset(self, height: int, width: int) -> Preset:
        built = Preset(self.preset_name, height, width, self.channels, self.e0_keV, self.de_keV)
        # Reuse the registered object when it matches, so dataset hashes stay identical.
        registered = PRESETS.get(self.preset_name)
        return registered if registered is not None and registered == built else built

    def operator(self, height: int = 1, width: int = 1) -> ForwardModel:
        return ForwardModel(self.preset(height, width), self.constants, elements=self.elements)


def _read_header(f: h5py.File) -> _Header:
    fmt = read_string_attr(f, "format", "/", required=False)
    if fmt != MEASUREMENT_FORMAT:
        found = "no 'format' attribute" if fmt is None else f"format {show_name(fmt)}"
        raise FormatError(
            f"the root group has {found}; a measurement file needs format = {MEASUREMENT_FORMAT!r}",
            where="/",
            rule="format",
        )
    check_format_version(f, FORMAT_VERSION)
    operator_version = read_string_attr(f, "operator_version", "/")
    if operator_version != OPERATOR_VERSION:
        raise FormatError(
            f"the file was made with operator {show_name(operator_version)}; this server runs "
            f"{OPERATOR_VERSION!r}, re-generate the file with it",
            where="/",
            rule="operator_version",
        )
    tier = read_string_attr(f, "tier", "/")
    if tier not in TIERS:
        raise FormatError(
            f"unknown tier {show_name(tier)}; expected one of {', '.join(TIERS)}", where="/", rule="attribute"
        )
    preset_name = read_string_attr(f, "preset", "/")
    content_hash = read_string_attr(f, "content_hash", "/", required=False) or ""
    if content_hash and not _HASH_PATTERN.fullmatch(content_hash):
        raise FormatError(
            "the root attribute 'content_hash' must be 64 lowercase hex digits", where="/", rule="attribute"
        )
    seed = read_int_attr(f, "seed", "/", required=False)
    elements = _read_elements(f)
    e0, de, channels = _read_energy(f)
    constants = _read_constants(f)
    ranges = _read_ranges(f)
    scene_ids = _read_scene_ids(f)
    header = _Header(
        tier,
        preset_name,
        operator_version,
        elements,
        e0,
        de,
        channels,
        constants,
        ranges,
        content_hash,
        seed,
        scene_ids,
    )
    _check_nominal_matrix(f, header)
    require_dataset(f, "lines", "/lines", fix="write the line table (element, line, energy_keV, weight)")
    return header


def _read_elements(f: h5py.File) -> tuple[str, ...]:
    dset = require_dataset(f, "elements", "/elements", fix="write the element names as strings")
    with reading_errors("/elements"):
        if dset.ndim != 1 or not 1 <= dset.shape[0] <= len(ELEMENTS) or h5py.check_string_dtype(dset.dtype) is None:
            raise FormatError(
                f"/elements must be 1 to {len(ELEMENTS)} strings; got {dset.dtype} with shape {dset.shape}",
                where="/elements",
                rule="shape",
            )
        names = tuple(str(v) for v in dset.asstr()[()])
    unknown = [n for n in names if n not in LINES]
    if unknown or len(set(names)) != len(names):
        raise FormatError(
            f"/elements {list(names)} must be distinct names among {list(ELEMENTS)}",
            where="/elements",
            rule="elements",
        )
    return names


def _read_energy(f: h5py.File) -> tuple[float, float, int]:
    where = "/energy_keV"
    dset = require_dataset(f, "energy_keV", where, fix="write the channel centres in keV")
    if dset.ndim != 1 or not 1 <= dset.shape[0] <= MAX_CHANNELS or dset.dtype.kind != "f":
        raise FormatError(
            f"{where} must be 1 to {MAX_CHANNELS} floats; got {dset.dtype} with shape {dset.shape}",
            where=where,
            rule="shape",
        )
    e0 = read_float_attr(dset, "e0_keV", where)
    de = read_float_attr(dset, "de_keV", where)
    if de <= 0:
        raise FormatError(f"{where} attribute 'de_keV' is {de}; it must be positive", where=where, rule="attribute")
    channels = int(dset.shape[0])
    check_readable_dataset(dset, where)
    with reading_errors(where):
        values = dset[()]
    expected = energy_axis(Preset("check", 1, 1, channels, e0, de))
    if not np.allclose(values, expected, rtol=1e-9, atol=1e-12):
        raise FormatError(
            f"{where} disagrees with its attributes: centres must be e0_keV + (c + 0.5)·de_keV",
            where=where,
            rule="energy_axis",
        )
    return e0, de, channels


def _read_constants(f: h5py.File) -> OperatorConstants:
    group = require_group(f, "operator", "/operator", fix="write the operator constants as attributes")
    fix = "write every constant of OperatorConstants"
    values = {fld.name: read_float_attr(group, fld.name, "/operator", fix=fix) for fld in fields(OperatorConstants)}
    return OperatorConstants.from_mapping(values)


def _read_ranges(f: h5py.File) -> dict[str, tuple[float, float]]:
    spec = require_group(f, "spec", "/spec", fix="write /spec/nominal and /spec/ranges")
    nominal = require_group(spec, "nominal", "/spec/nominal", fix="write the nominal θ as attributes")
    for name in SPEC_PARAMETERS:
        read_float_attr(nominal, name, "/spec/nominal")
    group = require_group(spec, "ranges", "/spec/ranges", fix="write each parameter's [lo, hi] as an attribute")
    ranges = {}
    for name in SPEC_PARAMETERS:
        value = read_attr(group, name, "/spec/ranges")
        pair = None if value is MISSING else np.asarray(value)
        ok = (
            pair is not None
            and pair.dtype.kind in "iuf"
            and pair.shape == (2,)
            and bool(np.all(np.isfinite(pair)))
            and pair[0] <= pair[1]
        )
        if not ok or pair is None:
            raise FormatError(
                f"/spec/ranges attribute {name!r} must be a finite pair [lo, hi] with lo ≤ hi",
                where="/spec/ranges",
                rule="attribute",
            )
        ranges[name] = (float(pair[0]), float(pair[1]))
    return ranges


def _read_scene_ids(f: h5py.File) -> list[str]:
    scenes = require_group(f, "scenes", "/scenes", fix="put one group per scene under /scenes")
    with reading_errors("/scenes"):
        ids = [name.decode("utf-8", "replace") for name in scenes.id]
    if not 1 <= len(ids) <= MAX_SCENES:
        raise FormatError(
            f"/scenes holds {len(ids)} scenes; expected 1 to {MAX_SCENES}", where="/scenes", rule="scenes"
        )
    for scene_id in ids:
        if not SCENE_ID_PATTERN.fullmatch(scene_id):
            raise FormatError(
                f"scene id {show_name(scene_id)} must be 1–64 letters, digits, '_', '.' or '-'",
                where=f"/scenes/{scene_id}",
                rule="scene_id",
            )
    return ids


def _check_nominal_matrix(f: h5py.File, header: _Header) -> None:
    where = "/operator/nominal_matrix"
    dset = require_dataset(f["operator"], "nominal_matrix", where, fix="write M(θ=0), shape (E, C)")
    shape = (len(header.elements), header.channels)
    if tuple(dset.shape) != shape or dset.dtype.kind != "f":
        raise FormatError(
            f"{where} has {dset.dtype} shape {tuple(dset.shape)}; expected floats of shape {shape} "
            "(len(/elements), len(/energy_keV))",
            where=where,
            rule="shape",
        )
    check_readable_dataset(dset, where)
    with reading_errors(where):
        stored = dset[()]
    rebuilt = header.operator().matrix(Spec())
    if not np.allclose(stored, rebuilt, rtol=_MATRIX_RTOL, atol=_MATRIX_RTOL * float(np.abs(rebuilt).max())):
        raise FormatError(
            f"{where} disagrees with the operator rebuilt from the /operator constants "
            f"({OPERATOR_VERSION}); re-write it from the same constants",
            where=where,
            rule="operator",
        )


# -- scenes ----------------------------------------------------------------------------------


@dataclass
class _SceneLayout:
    scene_id: str
    has_truth: bool
    height: int
    width: int


def _check_float(dset: h5py.Dataset, where: str, shape: tuple[int, ...], meaning: str) -> None:
    if tuple(dset.shape) != shape:
        raise FormatError(
            f"{where} has shape {tuple(dset.shape)}; expected {shape} {meaning}", where=where, rule="shape"
        )
    if dset.dtype.kind != "f":
        raise FormatError(f"{where} has dtype {dset.dtype}; expected float32 or float64", where=where, rule="dtype")
    check_readable_dataset(dset, where)


def _check_scene_layout(f: h5py.File, header: _Header, scene_id: str, grid: tuple[int, int] | None) -> _SceneLayout:
    """Metadata of one scene: shapes against /elements, /energy_keV and the other scenes."""
    base = f"/scenes/{scene_id}"
    group = require_group(
        f["scenes"], scene_id, base, fix="each scene is a group holding y, reference_mask and reference_x"
    )
    e, c = len(header.elements), header.channels
    y = require_dataset(group, "y", f"{base}/y", fix="write the spectrum cube (H, W, C) as float32")
    if y.ndim != 3 or y.shape[2] != c or not all(1 <= n <= MAX_SIDE for n in y.shape[:2]):
        raise FormatError(
            f"{base}/y has shape {tuple(y.shape)}; expected (H, W, {c}) with C = len(/energy_keV) "
            f"and 1 ≤ H, W ≤ {MAX_SIDE}",
            where=f"{base}/y",
            rule="shape",
        )
    h, w = int(y.shape[0]), int(y.shape[1])
    if grid is not None and (h, w) != grid:
        raise FormatError(
            f"{base}/y is {h}×{w} but the first scene is {grid[0]}×{grid[1]}; all scenes share one grid",
            where=f"{base}/y",
            rule="shape",
        )
    _check_float(y, f"{base}/y", (h, w, c), "(H, W, C)")
    mask = require_dataset(
        group, "reference_mask", f"{base}/reference_mask", fix="write the calibration strip as (H, W) bool"
    )
    if tuple(mask.shape) != (h, w) or mask.dtype != np.bool_:
        raise FormatError(
            f"{base}/reference_mask has {mask.dtype} shape {tuple(mask.shape)}; expected bool ({h}, {w})",
            where=f"{base}/reference_mask",
            rule="shape",
        )
    check_readable_dataset(mask, f"{base}/reference_mask")
    ref = require_dataset(group, "reference_x", f"{base}/reference_x", fix="write the strip's composition (E,)")
    _check_float(ref, f"{base}/reference_x", (e,), "(len(/elements),)")
    has_x = "x_true" in group
    spec_names = [SPEC_TRUE_PREFIX + name for name in SPEC_PARAMETERS]
    has_spec = any(name in group.attrs for name in spec_names)
    if has_x != has_spec:
        raise FormatError(
            f"{base} has {'x_true' if has_x else 'spec_true attributes'} but not "
            f"{'the spec_true attributes' if has_x else 'x_true'}; truth needs both",
            where=base,
            rule="truth",
        )
    if has_x:
        x = require_dataset(group, "x_true", f"{base}/x_true", fix="write the true maps (E, H, W)")
        _check_float(x, f"{base}/x_true", (e, h, w), "(E, H, W)")
        for name in spec_names:
            read_float_attr(group, name, base)
    return _SceneLayout(scene_id, has_x, h, w)


def _check_layouts(f: h5py.File, header: _Header, *, require_truth: bool) -> list[_SceneLayout]:
    layouts: list[_SceneLayout] = []
    for scene_id in header.scene_ids:
        grid = (layouts[0].height, layouts[0].width) if layouts else None
        layouts.append(_check_scene_layout(f, header, scene_id, grid))
    truth = [s.has_truth for s in layouts]
    if require_truth and not all(truth):
        missing = [s.scene_id for s in layouts if not s.has_truth]
        raise FormatError(
            f"scene(s) {', '.join(missing)} have no truth (x_true and spec_true/*); a dataset "
            "upload must carry the truth it is scored against",
            where=f"/scenes/{missing[0]}",
            rule="truth",
        )
    if any(truth) and not all(truth):
        raise FormatError(
            "only some scenes carry the truth; write it for all scenes or none", where="/scenes", rule="truth"
        )
    return layouts


def _value_problems(blocks, *, lo: float | None = None, hi: float | None = None) -> tuple[int, int]:
    nonfinite = outside = 0
    for block in blocks:
        finite = np.isfinite(block)
        nonfinite += int(block.size - np.count_nonzero(finite))
        if lo is not None:
            outside += int(np.count_nonzero(finite & ((block < lo) | (block > hi))))
    return nonfinite, outside


def _raise_values(where: str, nonfinite: int, outside: int, *, bounds: str = "[0, 1]") -> None:
    if nonfinite:
        raise FormatError(f"{where} has {nonfinite} non-finite values (NaN or inf)", where=where, rule="nonfinite")
    if outside:
        raise FormatError(
            f"{where} has {outside} values outside {bounds}; fractions must lie in {bounds}", where=where, rule="range"
        )


# -- public entry points -----------------------------------------------------------------------


def validate_measurement(path: str | os.PathLike, *, max_bytes: int | None, require_truth: bool = True) -> None:
    """Check an organizer's dataset upload, streaming the values in constant memory.

    Checks the size cap, the link/storage walk, root attributes (format, version, operator
    version, tier), /elements, /energy_keV against its e0/de attributes, the /operator
    constants and the stored nominal matrix against the rebuilt one, /spec, every scene's
    y / reference_mask / reference_x (and with ``require_truth``, x_true and spec_true/*) for
    shape consistency with /elements and /energy_keV, and that all values are finite
    (fractions in [0, 1]).
    """
    check_size(path, max_bytes)
    with open_hdf5(path) as f:
        check_tree(f)
        header = _read_header(f)
        layouts = _check_layouts(f, header, require_truth=require_truth)
        for layout in layouts:
            base = f"/scenes/{layout.scene_id}"
            group = f["scenes"][layout.scene_id]
            _raise_values(f"{base}/y", *_value_problems(iter_blocks(group["y"], f"{base}/y")))
            _raise_values(
                f"{base}/reference_x", *_value_problems(iter_blocks(group["reference_x"], base), lo=0.0, hi=1.0)
            )
            if layout.has_truth:
                _raise_values(
                    f"{base}/x_true", *_value_problems(iter_blocks(group["x_true"], f"{base}/x_true"), lo=0.0, hi=1.0)
                )


def read_measurement(path: str | os.PathLike) -> TierDataset:
    """Read a measurement file into a :class:`TierDataset`.

    The truth (``x_true``, ``spec_true``, ``seed``) is filled in only when the file has it;
    ``content_hash`` comes from the root attribute (computed when absent and the truth is
    present). The file is checked as by :func:`validate_measurement` without a size cap,
    on the loaded arrays.
    """
    with open_hdf5(path) as f:
        check_tree(f)
        header = _read_header(f)
        layouts = _check_layouts(f, header, require_truth=False)
        scenes = []
        for layout in layouts:
            base = f"/scenes/{layout.scene_id}"
            group = f["scenes"][layout.scene_id]
            with reading_errors(base):
                y = group["y"][()].astype(np.float32, copy=False)
                mask = group["reference_mask"][()]
                ref = group["reference_x"][()]
                x_true = group["x_true"][()] if layout.has_truth else None
            _raise_values(f"{base}/y", *_value_problems([y]))
            _raise_values(f"{base}/reference_x", *_value_problems([ref], lo=0.0, hi=1.0))
            spec_true = None
            if x_true is not None:
                _raise_values(f"{base}/x_true", *_value_problems([x_true], lo=0.0, hi=1.0))
                spec_true = Spec.from_mapping(
                    {name: read_float_attr(group, SPEC_TRUE_PREFIX + name, base) for name in SPEC_PARAMETERS}
                )
            scenes.append(Scene(layout.scene_id, y, mask, ref, x_true=x_true, spec_true=spec_true))
    return TierDataset(
        tier=header.tier,
        preset=header.preset(layouts[0].height, layouts[0].width),
        constants=header.constants,
        scenes=scenes,
        elements=header.elements,
        seed=header.seed,
        operator_version=header.operator_version,
        content_hash=header.content_hash,
        ranges=header.ranges,
    )


def operator_from_measurement(path: str | os.PathLike) -> ForwardModel:
    """Rebuild the forward model H(θ) from a measurement file alone.

    Uses the /operator constants, /elements, the preset name and the /energy_keV axis;
    ``operator_from_measurement(p).matrix(Spec())`` reproduces ``/operator/nominal_matrix``.
    """
    with open_hdf5(path) as f:
        check_tree(f)
        header = _read_header(f)
        y = f["scenes"][header.scene_ids[0]]["y"]
        return header.operator(int(y.shape[0]), int(y.shape[1]))


def read_truth_maps(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Organizer ground-truth import: ``/elements`` and ``/scenes/<id>/x_true`` (E, H, W).

    Only these two are read (no format attribute needed). ``/elements`` must name the
    :data:`~harness.forward.ELEMENTS` set in any order; the maps are returned as float64 in
    ``ELEMENTS`` order. Every map must be finite, in [0, 1], with per-pixel sums ≤ 1, and all
    scenes must share one grid.
    """
    check_size(path, max_bytes)
    with open_hdf5(path) as f:
        check_tree(f)
        elements = _read_elements(f)
        if set(elements) != set(ELEMENTS):
            raise FormatError(
                f"/elements {list(elements)} must list exactly {list(ELEMENTS)} (any order)",
                where="/elements",
                rule="elements",
            )
        order = [elements.index(e) for e in ELEMENTS]
        scene_ids = _read_scene_ids(f)
        grid: tuple[int, int] | None = None
        for scene_id in scene_ids:
            base = f"/scenes/{scene_id}"
            group = require_group(f["scenes"], scene_id, base, fix="each scene is a group holding x_true")
            x = require_dataset(group, "x_true", f"{base}/x_true", fix="write the maps as (E, H, W) floats")
            shape = tuple(x.shape)
            if len(shape) != 3 or shape[0] != len(elements) or not all(1 <= n <= MAX_SIDE for n in shape[1:]):
                raise FormatError(
                    f"{base}/x_true has shape {shape}; expected ({len(elements)}, H, W) with 1 ≤ H, W ≤ {MAX_SIDE}",
                    where=f"{base}/x_true",
                    rule="shape",
                )
            if grid is not None and shape[1:] != grid:
                raise FormatError(
                    f"{base}/x_true is {shape[1]}×{shape[2]} but the first scene is {grid[0]}×{grid[1]}; all scenes share one grid",
                    where=f"{base}/x_true",
                    rule="shape",
                )
            grid = shape[1:]
            _check_float(x, f"{base}/x_true", shape, "(E, H, W)")
        maps = {}
        for scene_id in scene_ids:
            where = f"/scenes/{scene_id}/x_true"
            with reading_errors(where):
                x = f["scenes"][scene_id]["x_true"][()].astype(np.float64)[order]
            _raise_values(where, *_value_problems([x], lo=0.0, hi=1.0))
            over = int(np.count_nonzero(x.sum(axis=0) > 1.0 + 1e-6))
            if over:
                raise FormatError(
                    f"{where} has {over} pixels whose fractions sum above 1; each pixel's fractions must sum to at most 1",
                    where=where,
                    rule="range",
                )
            maps[scene_id] = x
    return maps
