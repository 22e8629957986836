"""Result files (design §4): write, validate in constant memory, read.

Layout::

    /                       attrs format="edx-arena-result", format_version=1, method (optional)
    /scenes/<scene_id>/x_hat    (E, H, W) float32 or float64, element order as /elements
    /scenes/<scene_id>/spec     group; attrs: the four corrected θ parameters (real, finite)

Every scene of the tier must be present and no other scene may be; anything outside those
paths (extra root attributes, datasets outside ``/scenes``, extra members of a scene group)
is ignored and never read, except that the whole file is walked for links and
external/virtual storage, which are rejected anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import h5py
import numpy as np

from harness.dataset import Result, SceneResult, TierDataset
from harness.errors import FormatError
from harness.forward import Spec
from harness.tiers import SPEC_PARAMETERS

from ._atomic import atomic_hdf5
from ._layout import FORMAT_VERSION, RESULT_FORMAT
from ._safety import (
    SCENE_ID_PATTERN,
    check_format_version,
    check_readable_dataset,
    check_size,
    check_tree,
    count_nonfinite,
    open_hdf5,
    read_float_attr,
    read_string_attr,
    reading_errors,
    require_dataset,
    require_group,
    show_name,
)

__all__ = ["MAX_METHOD_CHARS", "ResultExpectation", "read_result", "validate_result", "write_result"]

#: Longest ``method`` attribute accepted (it is shown on the leaderboard).
MAX_METHOD_CHARS = 200


@dataclass(frozen=True)
class ResultExpectation:
    """What a valid result file for one tier looks like.

    ``scene_ids`` the tier's scenes (all required, no others), maps of shape
    ``(n_elements, height, width)``, and the upload size cap ``max_bytes``.
    """

    tier: str
    scene_ids: tuple[str, ...]
    n_elements: int
    height: int
    width: int
    max_bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene_ids", tuple(self.scene_ids))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_elements, self.height, self.width)

    @classmethod
    def for_dataset(cls, dataset: TierDataset, *, max_bytes: int) -> ResultExpectation:
        """The expectation for a result answering ``dataset`` (with or without truth)."""
        height, width = dataset.scenes[0].shape if dataset.scenes else (dataset.preset.height, dataset.preset.width)
        return cls(
            tier=dataset.tier,
            scene_ids=tuple(dataset.scene_ids),
            n_elements=len(dataset.elements),
            height=int(height),
            width=int(width),
            max_bytes=int(max_bytes),
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scene_ids"] = list(self.scene_ids)
        return out

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ResultExpectation:
        return cls(**{k: values[k] for k in ("tier", "scene_ids", "n_elements", "height", "width", "max_bytes")})


def write_result(result: Result, path: str | os.PathLike) -> None:
    """Write ``result`` as a result file, atomically (temp file + rename).

    ``x_hat`` keeps float32/float64 and other dtypes are stored as float32; each element map
    is one gzip-compressed chunk.
    """
    with atomic_hdf5(path) as f:
        f.attrs["format"] = RESULT_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        if result.method:
            f.attrs["method"] = str(result.method)[:MAX_METHOD_CHARS]
        scenes = f.create_group("scenes")
        for scene_id, scene in result.scenes.items():
            if not SCENE_ID_PATTERN.fullmatch(scene_id):
                raise ValueError(f"scene id {scene_id!r} must match {SCENE_ID_PATTERN.pattern}")
            x = np.asarray(scene.x_hat)
            if x.dtype not in (np.float32, np.float64):
                x = x.astype(np.float32)
            if x.ndim != 3:
                raise ValueError(f"x_hat of scene {scene_id!r} must be (E, H, W); got shape {x.shape}")
            group = scenes.create_group(scene_id)
            group.create_dataset(
                "x_hat", data=x, chunks=(1, *x.shape[1:]), compression="gzip", compression_opts=4, shuffle=True
            )
            spec = group.create_group("spec")
            for name, value in scene.spec.as_dict().items():
                spec.attrs[name] = float(value)


def validate_result(path: str | os.PathLike, expect: ResultExpectation) -> None:
    """Check a result file against ``expect`` in constant memory; raise on the first problem.

    Order: size cap (``os.stat``, before opening), HDF5 signature, the link/storage walk of
    the whole file, root attributes, the scene set, then per scene the metadata of ``x_hat``
    (rank, shape, dtype, filters, chunk size — a huge declared shape is rejected here, before
    any data is read) and ``spec``, and last the values of ``x_hat``, read chunk by chunk and
    counted for NaN/inf.

    Raises
    ------
    FileTooLargeError
        The file is over ``expect.max_bytes``.
    FormatError
        Any other rule; ``where`` names the object and ``rule`` the broken rule.
    """
    check_size(path, expect.max_bytes)
    with open_hdf5(path) as f:
        check_tree(f)
        _check_root(f)
        scenes = _check_scene_set(f, expect)
        for scene_id in expect.scene_ids:
            _check_scene_metadata(scenes, scene_id, expect)
        for scene_id in expect.scene_ids:
            where = f"/scenes/{scene_id}/x_hat"
            bad = count_nonfinite(scenes[scene_id]["x_hat"], where)
            if bad:
                raise FormatError(
                    f"{where}: scene {scene_id!r} has {bad} non-finite value{'s' if bad > 1 else ''} "
                    "(NaN or inf) in x_hat; every value must be a finite number (use 0 where "
                    "your method has no estimate)",
                    where=where,
                    rule="nonfinite",
                )


def read_result(path: str | os.PathLike, expect: ResultExpectation) -> Result:
    """Validate, then load the maps and corrected specs of every expected scene."""
    validate_result(path, expect)
    with open_hdf5(path) as f:
        method = read_string_attr(f, "method", "/", required=False) or ""
        scenes = {}
        for scene_id in expect.scene_ids:
            group = f["scenes"][scene_id]
            with reading_errors(f"/scenes/{scene_id}/x_hat"):
                x_hat = group["x_hat"][()]
            scenes[scene_id] = SceneResult(x_hat=x_hat, spec=_read_spec(group["spec"], f"/scenes/{scene_id}/spec"))
    return Result(scenes=scenes, method=method)


def _check_root(f: h5py.File) -> None:
    fmt = read_string_attr(f, "format", "/", required=False)
    if fmt != RESULT_FORMAT:
        found = "no 'format' attribute" if fmt is None else f"format {show_name(fmt)}"
        raise FormatError(
            f"the root group has {found}; a result file needs the root attribute format = {RESULT_FORMAT!r}",
            where="/",
            rule="format",
        )
    check_format_version(f, FORMAT_VERSION)
    method = read_string_attr(f, "method", "/", required=False)
    if method is not None and len(method) > MAX_METHOD_CHARS:
        raise FormatError(
            f"the root attribute 'method' is {len(method)} characters; keep it under {MAX_METHOD_CHARS}",
            where="/",
            rule="attribute",
            attribute="method",
        )


def _check_scene_set(f: h5py.File, expect: ResultExpectation) -> h5py.Group:
    scenes = require_group(f, "scenes", "/scenes", fix="put one group per scene under /scenes")
    expected = set(expect.scene_ids)
    with reading_errors("/scenes"):
        present = [name.decode("utf-8", "replace") for name in scenes.id]
    for name in present:
        if name not in expected:
            raise FormatError(
                f"/scenes holds an unexpected scene {show_name(name)}; the {expect.tier} tier's "
                f"scenes are {', '.join(expect.scene_ids)}",
                where=f"/scenes/{name}"[:200],
                rule="extra_scene",
            )
    for scene_id in expect.scene_ids:
        if scene_id not in present:
            raise FormatError(
                f"scene {scene_id!r} is missing: /scenes/{scene_id} not found; every scene of the "
                f"{expect.tier} tier ({', '.join(expect.scene_ids)}) needs a result",
                where=f"/scenes/{scene_id}",
                rule="missing_scene",
            )
    return scenes


def _check_scene_metadata(scenes: h5py.Group, scene_id: str, expect: ResultExpectation) -> None:
    base = f"/scenes/{scene_id}"
    group = require_group(scenes, scene_id, base, fix="each scene is a group holding x_hat and spec")
    where = f"{base}/x_hat"
    dset = require_dataset(group, "x_hat", where, fix=f"store the maps as an {expect.shape} float32 dataset")
    with reading_errors(where):
        shape, dtype = (None if dset.shape is None else tuple(dset.shape)), dset.dtype
    if shape != expect.shape:
        raise FormatError(
            f"{where} has shape {shape}; the {expect.tier} tier expects {expect.shape} (elements, height, width)",
            where=where,
            rule="shape",
        )
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise FormatError(
            f"{where} has dtype {dtype}; x_hat must be float32 or float64",
            where=where,
            rule="dtype",
        )
    check_readable_dataset(dset, where)
    spec = require_group(group, "spec", f"{base}/spec", fix=f"add a group with attributes {', '.join(SPEC_PARAMETERS)}")
    _read_spec(spec, f"{base}/spec")


def _read_spec(group: h5py.Group, where: str) -> Spec:
    fix = f"the spec group needs the attributes {', '.join(SPEC_PARAMETERS)} as real numbers"
    return Spec.from_mapping({name: read_float_attr(group, name, where, fix=fix) for name in SPEC_PARAMETERS})
