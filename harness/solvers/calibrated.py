"""Calibrated Poisson reconstruction: estimate the spec θ with the maps (the "+gradient" idea).

The instrument deviates from the nominal operator by θ = (a, ΔΩ, p, b) (design §1). This
solver maximises the joint Poisson likelihood of θ and the maps by alternating

* a **θ-step**: ``θ ← argmax_θ L_ref(θ) + L_fit(θ)`` within the published ranges
  (L-BFGS-B, numerical gradient, parameters scaled to their range), where
  ``L_ref = Σ_{strip} Σ_c (y log λ − λ)`` uses the calibration strip, whose composition is
  known (design §2), and is the only term that sees the gain ΔΩ: elsewhere gain and maps
  trade off exactly. ``L_fit`` adds a random subset of the other pixels at their current
  maps, with each pixel's overall scale profiled out,
  ``L_fit = Σ_p [Σ_c y_pc log λ_pc − Y_p log Λ_p]`` (``Y_p``, ``Λ_p`` the pixel's total
  counts and expected counts), so it informs the shape parameters (peak width, absorption,
  continuum level) and cannot pull the gain back towards the previous iterate.
* an **x-step**: early-stopped MLEM with ``H(θ̂)`` on the pixels outside the strip, restarted
  from the flat start each round (or EM-TV on the whole grid, warm-started).

The strip itself is returned at its published composition.

Why EM-TV by default: on Hidden-tier phantoms at dose 100 (default preset, 6 scenes) the
calibrated solver with MLEM x-steps scores 0.462 blind against 0.453 for nominal MLEM;
with EM-TV x-steps 0.848 against 0.716 for nominal EM-TV. Calibrating matters once the
noise is down to the size of the θ-induced bias. Every likelihood uses the
0 · log 0 = 0 guard: channels with λ = 0 and y = 0 contribute nothing
(:mod:`harness.solvers._poisson`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
from scipy.optimize import minimize

from harness.dataset import Scene, SceneResult
from harness.forward import ForwardModel, Spec
from harness.solvers._poisson import (
    EPSILON,
    Counts,
    counts_from_cube,
    expected_at_counts,
    log_likelihood,
    reference_pixels,
)
from harness.solvers.mlem import DEFAULT_ITERATIONS as MLEM_ITERATIONS
from harness.solvers.mlem import initial_maps, mlem
from harness.solvers.tv import DEFAULT_ITERATIONS as TV_ITERATIONS
from harness.solvers.tv import DEFAULT_WEIGHT, em_tv
from harness.tiers import BLIND_TIERS, SPEC_PARAMETERS, TIER_RANGES

__all__ = ["DEFAULT_RANGES", "DEFAULT_ROUNDS", "estimate_spec", "solve"]

#: The union of the blind tiers' published ranges: the solver sees no tier name.
DEFAULT_RANGES: Mapping[str, tuple[float, float]] = {
    name: (
        min(TIER_RANGES[t][name][0] for t in BLIND_TIERS),
        max(TIER_RANGES[t][name][1] for t in BLIND_TIERS),
    )
    for name in SPEC_PARAMETERS
}
#: Alternations of θ- and x-steps.
DEFAULT_ROUNDS = 3
#: Pixels outside the strip used in the θ-step (a random subset keeps it fast).
DEFAULT_FIT_PIXELS = 4096

Progress = Callable[[int, int], None]


def _bounds(ranges: Mapping[str, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    missing = [name for name in SPEC_PARAMETERS if name not in ranges]
    if missing:
        raise ValueError(f"ranges lack {missing}; give [lo, hi] for each of {list(SPEC_PARAMETERS)}")
    lo = np.array([float(ranges[n][0]) for n in SPEC_PARAMETERS])
    hi = np.array([float(ranges[n][1]) for n in SPEC_PARAMETERS])
    bad = [n for n, low, high in zip(SPEC_PARAMETERS, lo, hi) if not low <= 0.0 <= high]
    if bad:
        raise ValueError(f"ranges of {bad} must contain the nominal value 0; got {dict(ranges)}")
    return lo, hi


def _profiled_log_likelihood(counts: Counts, x: np.ndarray, matrix: np.ndarray, totals: np.ndarray) -> float:
    """``Σ_p [Σ_c y log λ − Y_p log Λ_p]``: the likelihood with each pixel's scale maximised out."""
    lam = expected_at_counts(counts, x, matrix)
    expected_totals = x @ matrix.sum(axis=1)
    keep = totals > 0
    return float(
        counts.values @ np.log(np.maximum(lam, EPSILON))
        - totals[keep] @ np.log(np.maximum(expected_totals[keep], EPSILON))
    )


def estimate_spec(
    operator: ForwardModel,
    reference_counts: Counts,
    reference_x: np.ndarray,
    *,
    ranges: Mapping[str, tuple[float, float]] = DEFAULT_RANGES,
    start: Spec = Spec(),
    fit_counts: Counts | None = None,
    fit_x: np.ndarray | None = None,
) -> Spec:
    """Maximum-likelihood θ within ``ranges`` (see the module docstring).

    Parameters
    ----------
    operator : ForwardModel
        Builds ``M(θ)`` for any θ.
    reference_counts : Counts
        Counts of the calibration-strip pixels.
    reference_x : ndarray (E,)
        The strip's published composition.
    ranges : mapping parameter → (lo, hi)
        Bounds of the search; each must contain 0.
    start : Spec
        Starting point (clipped into the bounds).
    fit_counts, fit_x : Counts and ndarray (n, E), optional
        Other pixels and their current maps, for the scale-profiled term ``L_fit``.
    """
    lo, hi = _bounds(ranges)
    width = np.where(hi > lo, hi - lo, 1.0)
    x_ref = np.broadcast_to(np.asarray(reference_x, dtype=np.float64), (reference_counts.n_pixels, len(reference_x)))
    # Normalise the objective by the counts used, so L-BFGS-B tolerances mean the same at any dose.
    n_counts = float(reference_counts.values.sum())
    fit_totals = None
    if fit_counts is not None:
        fit_totals = np.asarray(fit_counts.matrix.sum(axis=1)).ravel()
        n_counts += float(fit_totals.sum())
    n_counts = max(n_counts, 1.0)

    def objective(u: np.ndarray) -> float:
        matrix = operator.matrix(Spec.from_array(lo + u * width))
        value = log_likelihood(reference_counts, x_ref, matrix)
        if fit_counts is not None:
            assert fit_x is not None and fit_totals is not None  # given together
            value += _profiled_log_likelihood(fit_counts, fit_x, matrix, fit_totals)
        return -value / n_counts

    u0 = np.clip((start.as_array() - lo) / width, 0.0, 1.0)
    fixed = hi <= lo
    result = minimize(
        objective,
        u0,
        method="L-BFGS-B",
        bounds=[(0.0, 0.0) if f else (0.0, 1.0) for f in fixed],
        options={"ftol": 1e-12, "gtol": 1e-8},
    )
    return Spec.from_array(np.where(fixed, lo, lo + result.x * width))


def solve(
    scene: Scene,
    operator: ForwardModel,
    *,
    ranges: Mapping[str, tuple[float, float]] = DEFAULT_RANGES,
    rounds: int = DEFAULT_ROUNDS,
    iterations: int | None = None,
    x_update: Literal["mlem", "tv"] = "tv",
    tv_weight: float = DEFAULT_WEIGHT,
    fit_pixels: int = DEFAULT_FIT_PIXELS,
    seed: int = 0,
    progress: Progress | None = None,
) -> SceneResult:
    """Alternate θ-steps and x-steps; returns maps clipped to [0, 1] and the estimated θ̂.

    Parameters
    ----------
    scene : Scene
        The measurement with its calibration strip (``reference_mask``, ``reference_x``).
    operator : ForwardModel
        The nominal forward model; ``operator.matrix(θ)`` rebuilds ``H(θ)``.
    ranges : mapping parameter → (lo, hi)
        Published θ ranges of the tier; default the union of the blind tiers' ranges.
    rounds : int
        θ/x alternations (≥ 1).
    iterations : int, optional
        x-step iterations per round: MLEM updates (default that of
        :mod:`~harness.solvers.mlem`; each round restarts from the flat start, so the maps are
        early-stopped MLEM with ``H(θ̂)``), or EM-TV outer iterations (default that of
        :mod:`~harness.solvers.tv`; warm-started).
    x_update : "mlem" or "tv"
        The x-step: EM-TV with weight ``tv_weight`` (default), or early-stopped MLEM. At
        dose 100 the per-pixel noise of MLEM maps outweighs the θ-induced bias, so
        calibration pays off only once the maps are denoised (module docstring).
    fit_pixels : int
        Pixels outside the strip used in the θ-step (0: the strip alone).
    seed : int
        Seed of the pixel subset, so a run is reproducible.
    progress : callable(done, total), optional
        Called after each θ-step and x-step (``2 · rounds`` steps).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1; got {rounds}")
    if x_update not in ("mlem", "tv"):
        raise ValueError(f"x_update must be 'mlem' or 'tv'; got {x_update!r}")
    height, width = scene.shape
    reference_x = np.asarray(scene.reference_x, dtype=np.float64)
    strip = reference_pixels(scene.reference_mask)
    if strip.size == 0:
        raise ValueError(f"scene {scene.scene_id!r} has an empty reference_mask; the gain needs the calibration strip")
    counts = counts_from_cube(scene.y)
    others = np.setdiff1d(np.arange(counts.n_pixels), strip)
    strip_counts = counts.subset(strip)
    other_counts = counts.subset(others)
    rng = np.random.default_rng(seed)
    fit_index = np.sort(rng.choice(others.size, size=min(fit_pixels, others.size), replace=False))
    fit_counts = other_counts.subset(fit_index) if fit_index.size else None

    spec = estimate_spec(operator, strip_counts, reference_x, ranges=ranges)
    steps = iterations if iterations is not None else (MLEM_ITERATIONS if x_update == "mlem" else TV_ITERATIONS)
    x = np.tile(reference_x, (counts.n_pixels, 1))
    x[others] = initial_maps(other_counts, operator.matrix(spec))
    total_steps = 2 * rounds
    for r in range(rounds):
        if r > 0 and fit_counts is not None:
            spec = estimate_spec(
                operator,
                strip_counts,
                reference_x,
                ranges=ranges,
                start=spec,
                fit_counts=fit_counts,
                fit_x=x[others][fit_index],
            )
        if progress is not None:
            progress(2 * r + 1, total_steps)
        matrix = operator.matrix(spec)
        if x_update == "mlem":
            # Restarted each round: early-stopped MLEM regularises through its start point.
            x[others] = mlem(other_counts, matrix, iterations=steps, x0=initial_maps(other_counts, matrix))
        else:
            x = em_tv(counts, matrix, (height, width), iterations=steps, weight=tv_weight, x0=x)
            x[strip] = reference_x
        if progress is not None:
            progress(2 * r + 2, total_steps)
    x_hat = np.clip(x, 0.0, 1.0).T.reshape(-1, height, width)
    return SceneResult(x_hat=x_hat, spec=spec)
