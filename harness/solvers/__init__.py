"""Reference solvers: each maps (scene, operator) → SceneResult(x̂, θ̂).

=============  =====================================================================
``nnls``       per-pixel non-negative least squares, nominal operator (baseline)
``mlem``       Poisson MLEM, nominal operator
``tv``         TV-regularised Poisson reconstruction (EM-TV), nominal operator
``nmf``        PCA denoise, then per-pixel unmixing
``calibrated`` alternates x-updates with a likelihood estimate of θ ("+gradient")
=============  =====================================================================

Only numpy and scipy are used, so every solver runs in the reference image.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.dataset import Result, Scene, SceneResult, TierDataset
from harness.solvers import calibrated, mlem, nmf, nnls, tv

__all__ = ["SOLVERS", "solve_dataset"]

Solver = Callable[..., SceneResult]

SOLVERS: dict[str, Solver] = {
    "nnls": nnls.solve,
    "mlem": mlem.solve,
    "tv": tv.solve,
    "nmf": nmf.solve,
    "calibrated": calibrated.solve,
}


def solve_dataset(
    dataset: TierDataset, *, solver: str = "nnls", progress: Callable[[int, int], None] | None = None
) -> Result:
    """Run ``solver`` on every scene of ``dataset`` (truth, if any, is not looked at)."""
    try:
        solve = SOLVERS[solver]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(sorted(SOLVERS))}") from None
    operator = dataset.operator()
    scenes: dict[str, SceneResult] = {}
    for i, scene in enumerate(dataset.scenes):
        scenes[scene.scene_id] = solve(
            Scene(scene.scene_id, scene.y, scene.reference_mask, scene.reference_x), operator
        )
        if progress is not None:
            progress(i + 1, len(dataset.scenes))
    return Result(scenes=scenes, method=solver)
