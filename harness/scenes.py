"""Phantom scenes and tier datasets (design §3).

A phantom is 6 element maps (E, H, W) of fractions in [0, 1] whose per-pixel sum is at most 1
(the rest is an unlisted light matrix). It is built from Voronoi grains, a composition
gradient, a diffuse interface and small particles; rows ``0 … REFERENCE_ROWS − 1`` are the
calibration standard of published composition :data:`REFERENCE_COMPOSITION`.

Every element is present (x ≥ 0.05) in at least a fifth of the non-reference pixels, because
sparse maps let SSIM reward an empty answer. The construction guarantees it: each element
gets a set of grains covering ≥ 30 % of the non-reference area, and as the last step, after
every feature and the sum ≤ 1 rescale, its fraction there is raised to at least 0.06 (the
other elements of an over-full pixel shrink to make room; six floors take at most 0.36).
:func:`make_phantom` then checks the rule and raises if it ever fails; it never redraws.

Randomness: a tier's seed feeds ``np.random.SeedSequence(seed).spawn(3)``, one independent
stream per scene, drawn in a fixed order (θ, then the phantom, then the noise), so a scene
does not change when another scene's generation changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.special import erf

from harness.dataset import Scene, TierDataset
from harness.forward import ELEMENTS, ForwardModel, OperatorConstants, Spec
from harness.tiers import PRESETS, REFERENCE_ROWS, SCENES_PER_TIER, SPEC_PARAMETERS, Preset, spec_ranges

__all__ = [
    "PRESENCE_FRACTION",
    "PRESENCE_THRESHOLD",
    "REFERENCE_COMPOSITION",
    "build_tier",
    "dataset_from_maps",
    "draw_spec",
    "make_phantom",
    "reference_mask",
]

#: Published composition of the calibration strip (fractions; sum 0.9).
REFERENCE_COMPOSITION: Mapping[str, float] = {"Si": 0.25, "S": 0.10, "Ti": 0.15, "Mo": 0.10, "Ba": 0.10, "W": 0.20}
#: An element is "present" in a pixel at this fraction or more …
PRESENCE_THRESHOLD = 0.05
#: … and must be present in at least this share of the non-reference pixels.
PRESENCE_FRACTION = 0.2

_FLOOR = 0.06  # enforced last, so it holds exactly; above the threshold by a float32-safe margin
_FLOOR_AREA = 0.3  # share of the non-reference area given each element's floor (> PRESENCE_FRACTION)

Progress = Callable[[int, int], None]


def _preset(preset: Preset | str) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}") from None


def reference_mask(height: int, width: int) -> np.ndarray:
    """The calibration strip: rows ``0 … REFERENCE_ROWS − 1``, full width, (H, W) bool."""
    mask = np.zeros((height, width), dtype=bool)
    mask[:REFERENCE_ROWS] = True
    return mask


def _reference_vector(elements: tuple[str, ...]) -> np.ndarray:
    return np.array([REFERENCE_COMPOSITION[e] for e in elements], dtype=np.float64)


def _check_presence(x: np.ndarray, elements: tuple[str, ...]) -> None:
    """Raise ``RuntimeError`` naming each element present in too few non-reference pixels."""
    share = (x[:, REFERENCE_ROWS:, :] >= PRESENCE_THRESHOLD).mean(axis=(1, 2))
    short = [f"{el} {s:.1%}" for el, s in zip(elements, share) if s < PRESENCE_FRACTION]
    if short:
        raise RuntimeError(
            f"phantom breaks the presence rule (x ≥ {PRESENCE_THRESHOLD} in ≥ {PRESENCE_FRACTION:.0%} "
            f"of the non-reference pixels): {', '.join(short)}; this is a bug in harness.scenes"
        )


def _apply_floors(x: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Raise x to ``floor`` (E, H, W) and shrink the rest of any pixel whose sum exceeds 1.

    ``x' = f + (max(x, f) − f) · s`` with ``s = min(1, (1 − Σf) / Σ(max(x, f) − f))`` per pixel,
    so ``x' ≥ f`` and ``Σ x' ≤ 1`` whenever ``Σ f ≤ 1``.
    """
    excess = np.maximum(x, floor) - floor
    room = 1.0 - floor.sum(axis=0)
    total = excess.sum(axis=0)
    scale = np.where(total > room, room / np.where(total > 0, total, 1.0), 1.0)
    return floor + excess * scale


def _draw_phantom(rng: np.random.Generator, n_elements: int, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    size = float(min(height, width))

    # Voronoi grains over the non-reference area, each with its own composition.
    n_grains = int(rng.integers(8, 15))
    centres = np.column_stack([rng.uniform(REFERENCE_ROWS, height, n_grains), rng.uniform(0, width, n_grains)])
    dist = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    label = np.argmin(dist, axis=0)
    comp = rng.dirichlet(np.full(n_elements, 0.6), size=n_grains) * rng.uniform(0.5, 0.85, size=(n_grains, 1))
    body_label = label[REFERENCE_ROWS:]
    area = np.bincount(body_label.ravel(), minlength=n_grains) / body_label.size
    floored = np.zeros((n_elements, n_grains), dtype=bool)
    for e in range(n_elements):
        covered = 0.0
        for g in rng.permutation(n_grains):
            if covered >= _FLOOR_AREA:
                break
            floored[e, g] = True
            covered += area[g]
    x = comp[label].transpose(2, 0, 1).copy()

    # A linear composition gradient of one element in a random direction.
    e_grad = int(rng.integers(n_elements))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-12)
    x[e_grad] += rng.uniform(0.1, 0.25) * ramp

    # A diffuse interface: one element enriched on one side of a random line.
    e_int = int(rng.integers(n_elements))
    angle = rng.uniform(0, 2 * np.pi)
    py, px = rng.uniform(REFERENCE_ROWS, height), rng.uniform(0, width)
    signed = np.cos(angle) * (xx - px) + np.sin(angle) * (yy - py)
    x[e_int] += rng.uniform(0.15, 0.3) * 0.5 * (1.0 + erf(signed / (rng.uniform(1.0, 3.0) * np.sqrt(2.0))))

    # Small particles rich in one element, anti-aliased at the rim.
    for _ in range(int(rng.integers(6, 14))):
        e_p = int(rng.integers(n_elements))
        cy, cx = rng.uniform(REFERENCE_ROWS, height), rng.uniform(0, width)
        radius = rng.uniform(1.5, 1.5 + 0.04 * size)
        w = np.clip(radius + 0.5 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)
        value = np.zeros(n_elements)
        value[e_p] = rng.uniform(0.6, 0.9)
        x = x * (1.0 - w) + w * value[:, None, None]

    total = x.sum(axis=0)
    x /= np.maximum(total, 1.0)
    x = _apply_floors(x, np.where(floored[:, label], _FLOOR, 0.0))
    return np.clip(x, 0.0, 1.0)


def make_phantom(preset: Preset | str, rng: np.random.Generator, *, elements: tuple[str, ...] = ELEMENTS) -> np.ndarray:
    """A phantom (E, H, W) float64: grains, gradient, interface, particles, reference strip.

    Fractions are in [0, 1], sum to ≤ 1 per pixel, and every element reaches
    ``PRESENCE_THRESHOLD`` in at least ``PRESENCE_FRACTION`` of the non-reference pixels
    (guaranteed by construction; checked, ``RuntimeError`` if it ever fails).
    """
    p = _preset(preset)
    x = _draw_phantom(rng, len(elements), p.height, p.width)
    x[:, :REFERENCE_ROWS, :] = _reference_vector(elements)[:, None, None]
    _check_presence(x, elements)
    return x


def draw_spec(tier: str, rng: np.random.Generator) -> Spec:
    """θ uniform in ``tier``'s published ranges (all zero on the Standard track)."""
    ranges = spec_ranges(tier)
    return Spec(**{name: float(rng.uniform(*ranges[name])) for name in SPEC_PARAMETERS})


def _scene(scene_id: str, x: np.ndarray, spec: Spec, model: ForwardModel, rng: np.random.Generator) -> Scene:
    h, w = x.shape[1:]
    return Scene(
        scene_id=scene_id,
        y=model.sample(x, spec, rng),
        reference_mask=reference_mask(h, w),
        reference_x=_reference_vector(model.elements),
        x_true=x.astype(np.float32).astype(np.float64),
        spec_true=spec,
    )


def build_tier(
    tier: str,
    *,
    seed: int,
    preset: Preset | str = "default",
    constants: OperatorConstants | None = None,
    progress: Progress | None = None,
) -> TierDataset:
    """The ``SCENES_PER_TIER`` scenes ``<tier>-s0, <tier>-s1, …`` of ``tier`` (tier-prefixed, so a
    result made for another tier is refused by name), with truth; deterministic in ``seed``.

    Each scene has its own θ drawn from the tier's ranges and its own noise.
    """
    p = _preset(preset)
    spec_ranges(tier)  # fail early on an unknown tier
    model = ForwardModel(p, constants)
    streams = np.random.SeedSequence(seed).spawn(SCENES_PER_TIER)
    scenes = []
    for i, stream in enumerate(streams):
        rng = np.random.default_rng(stream)
        spec = draw_spec(tier, rng)
        x = make_phantom(p, rng, elements=model.elements)
        scenes.append(_scene(f"{tier}-s{i}", x, spec, model, rng))
        if progress is not None:
            progress(i + 1, SCENES_PER_TIER)
    return TierDataset(tier=tier, preset=p, constants=model.constants, scenes=scenes, seed=seed)


def dataset_from_maps(
    tier: str,
    maps: Mapping[str, np.ndarray],
    *,
    seed: int,
    preset: Preset | str = "default",
    constants: OperatorConstants | None = None,
    specs: Mapping[str, Spec] | None = None,
) -> TierDataset:
    """A tier dataset from an organizer's own ground-truth maps.

    ``maps`` holds (E, H, W) fractions per scene id, with E = 6 in :data:`ELEMENTS` order and
    (H, W) the preset's grid. Rows ``0 … REFERENCE_ROWS − 1`` are overwritten with
    :data:`REFERENCE_COMPOSITION`: every scene must carry the calibration standard. θ comes
    from ``specs`` (checked against the tier's ranges) or is drawn from them; scene i uses
    stream i of ``SeedSequence(seed).spawn(len(maps))``. The presence rule of
    :func:`make_phantom` is not imposed: real specimens may be sparse.
    """
    p = _preset(preset)
    ranges = spec_ranges(tier)
    if not maps:
        raise ValueError("no scenes given; pass at least one (E, H, W) map stack")
    unknown = sorted(set(specs or {}) - set(maps))
    if unknown:
        raise ValueError(f"specs given for scenes {unknown} that have no maps; scenes are {sorted(maps)}")
    model = ForwardModel(p, constants)
    expected = (len(model.elements), p.height, p.width)
    streams = np.random.SeedSequence(seed).spawn(len(maps))
    scenes = []
    for (scene_id, x), stream in zip(maps.items(), streams):
        x = np.asarray(x, dtype=np.float64)
        if x.shape != expected:
            raise ValueError(f"scene {scene_id!r}: maps have shape {x.shape}; the {p.name} preset needs {expected}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"scene {scene_id!r}: maps contain NaN or infinite values")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"scene {scene_id!r}: fractions must be in [0, 1]; got [{x.min():.3g}, {x.max():.3g}]")
        if x.sum(axis=0).max() > 1 + 1e-6:
            raise ValueError(f"scene {scene_id!r}: fractions of a pixel sum to {x.sum(axis=0).max():.3g} > 1")
        x = x.copy()
        x[:, :REFERENCE_ROWS, :] = _reference_vector(model.elements)[:, None, None]
        rng = np.random.default_rng(stream)
        spec = specs[scene_id] if specs and scene_id in specs else draw_spec(tier, rng)
        for name in SPEC_PARAMETERS:
            lo, hi = ranges[name]
            if not lo <= getattr(spec, name) <= hi:
                raise ValueError(
                    f"scene {scene_id!r}: {name}={getattr(spec, name)} is outside the {tier} range [{lo}, {hi}]"
                )
        scenes.append(_scene(scene_id, x, spec, model, rng))
    return TierDataset(tier=tier, preset=p, constants=model.constants, scenes=scenes, seed=seed)
