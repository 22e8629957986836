"""In-memory tier datasets and results, and the dataset content hash.

These are the typed values that flow between the harness modules: ``scenes`` builds a
:class:`TierDataset`, ``formats`` writes and reads it, ``scoring`` scores a
:class:`Result` against it, solvers turn a :class:`Scene` into a :class:`SceneResult`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from harness.forward import ELEMENTS, OPERATOR_VERSION, ForwardModel, OperatorConstants, Spec
from harness.tiers import PRESETS, Preset, spec_ranges

__all__ = ["Result", "Scene", "SceneResult", "TierDataset", "content_hash"]


@dataclass
class Scene:
    """One scan.

    ``y`` (H, W, C) float32 counts; ``reference_mask`` (H, W) bool, the calibration strip;
    ``reference_x`` (E,) its published composition; ``x_true`` (E, H, W) and ``spec_true``
    only where the caller may see the truth (``None`` otherwise).
    """

    scene_id: str
    y: np.ndarray
    reference_mask: np.ndarray
    reference_x: np.ndarray
    x_true: np.ndarray | None = None
    spec_true: Spec | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.y.shape[0]), int(self.y.shape[1]))

    def without_truth(self) -> Scene:
        return replace(self, x_true=None, spec_true=None)


@dataclass
class TierDataset:
    """The 3 scenes of a tier and the operator they were measured with.

    ``content_hash`` identifies the full dataset (truth included) and is kept by its
    truth-stripped views, so a score row can name the dataset it was scored against.
    """

    tier: str
    preset: Preset
    constants: OperatorConstants
    scenes: list[Scene]
    elements: tuple[str, ...] = ELEMENTS
    seed: int | None = None
    operator_version: str = OPERATOR_VERSION
    content_hash: str = ""
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ranges:
            self.ranges = dict(spec_ranges(self.tier))
        if not self.content_hash and all(s.x_true is not None for s in self.scenes):
            self.content_hash = content_hash(self)

    @property
    def has_truth(self) -> bool:
        return all(s.x_true is not None and s.spec_true is not None for s in self.scenes)

    @property
    def scene_ids(self) -> list[str]:
        return [s.scene_id for s in self.scenes]

    def scene(self, scene_id: str) -> Scene:
        for s in self.scenes:
            if s.scene_id == scene_id:
                return s
        raise KeyError(scene_id)

    def operator(self) -> ForwardModel:
        return ForwardModel(self.preset, self.constants, elements=self.elements)

    def participant_view(self, *, with_truth: bool) -> TierDataset:
        """What a participant may download: never the seed (it regenerates the truth, and
        organizers may derive one tier's seed from another's); the truth only for Public."""
        return replace(self if with_truth else self.without_truth(), seed=None)

    def without_truth(self) -> TierDataset:
        """The participant's (Dev) or container's (Hidden) view: same hash, no truth."""
        return replace(self, scenes=[s.without_truth() for s in self.scenes])


@dataclass
class SceneResult:
    """A method's answer for one scene: maps (E, H, W) and the corrected spec θ̂."""

    x_hat: np.ndarray
    spec: Spec


@dataclass
class Result:
    """A method's answer for a whole tier (design §4 result file)."""

    scenes: dict[str, SceneResult]
    method: str = ""


def _update(h: hashlib._Hash, array: np.ndarray, dtype: str) -> None:
    a = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())


def content_hash(dataset: TierDataset) -> str:
    """sha256 over the canonical arrays of a dataset with truth.

    Canonical form: operator version, preset, constants, elements, then for each scene in
    order its id, ``y`` as little-endian float32, ``reference_mask`` as uint8,
    ``reference_x`` and ``x_true`` as little-endian float32 and the true spec as float64.
    Stable across HDF5 chunking/compression, so re-writing a file keeps its hash.
    """
    if not dataset.has_truth:
        raise ValueError("content_hash needs the truth; hash the full dataset, not a view")
    h = hashlib.sha256()
    header = (
        f"{dataset.operator_version}|{dataset.tier}|{dataset.preset}|"
        f"{sorted(dataset.constants.as_dict().items())}|{list(dataset.elements)}"
    )
    h.update(header.encode())
    for s in dataset.scenes:
        assert s.x_true is not None and s.spec_true is not None  # has_truth, checked above
        h.update(s.scene_id.encode() + b"\0")
        _update(h, s.y, "f4")
        _update(h, s.reference_mask, "u1")
        _update(h, s.reference_x, "f4")
        _update(h, s.x_true, "f4")
        _update(h, s.spec_true.as_array(), "f8")
    return h.hexdigest()


def preset_named(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None
