"""Nominal least squares: per-pixel non-negative least squares with the nominal operator.

The simplest baseline. For every pixel p it solves ::

    x̂_p = argmin_{x ≥ 0} ‖y_p − x M₀‖₂²,      M₀ = M(θ = 0)   (E, C)

through the normal equations ``G = M₀ M₀ᵀ`` (E × E) and ``b_p = y_p M₀ᵀ``, so the cube is
read once (one (H·W, C) × (C, E) product). With E = 6 the exact solution is found by trying
every active set (2^E − 1 subsets) at once for all pixels: each subset's unconstrained
optimum, clipped to x ≥ 0, is a feasible point, the true optimum is one of them (the KKT
point of a strictly convex problem), so the feasible candidate of lowest objective is it.
The spec is not estimated: θ̂ is nominal.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np

from harness.dataset import Scene, SceneResult
from harness.forward import ForwardModel, Spec

__all__ = ["nnls_normal", "solve"]

Progress = Callable[[int, int], None]
_MAX_EXACT_ELEMENTS = 12  # 4095 subsets; beyond that the enumeration is no longer cheap


def nnls_normal(gram: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """Exact non-negative minimiser of ``½ xᵀ G x − bᵀ x`` for many right-hand sides.

    Parameters
    ----------
    gram : (E, E) array, symmetric positive definite ``G``.
    linear : (N, E) array, one ``b`` per row.

    Returns
    -------
    (N, E) float64 array ``x ≥ 0``.
    """
    gram = np.asarray(gram, dtype=np.float64)
    linear = np.asarray(linear, dtype=np.float64)
    n_el = gram.shape[0]
    if gram.shape != (n_el, n_el) or linear.ndim != 2 or linear.shape[1] != n_el:
        raise ValueError(f"gram must be (E, E) and linear (N, E); got {gram.shape} and {linear.shape}")
    if n_el > _MAX_EXACT_ELEMENTS:
        raise ValueError(f"exact NNLS enumerates active sets; {n_el} elements is over {_MAX_EXACT_ELEMENTS}")
    best = np.zeros_like(linear)  # x = 0, objective 0, is always feasible
    best_obj = np.zeros(linear.shape[0])
    for size in range(1, n_el + 1):
        for subset in combinations(range(n_el), size):
            idx = list(subset)
            candidate = np.zeros_like(linear)
            candidate[:, idx] = np.maximum(np.linalg.solve(gram[np.ix_(idx, idx)], linear[:, idx].T).T, 0.0)
            obj = 0.5 * np.einsum("ne,ne->n", candidate @ gram, candidate) - np.einsum("ne,ne->n", linear, candidate)
            better = obj < best_obj
            best[better] = candidate[better]
            best_obj[better] = obj[better]
    return best


def solve(scene: Scene, operator: ForwardModel, *, progress: Progress | None = None) -> SceneResult:
    """Per-pixel NNLS with the nominal operator; maps clipped to [0, 1], θ̂ nominal."""
    m = operator.matrix(Spec())
    h, w, c = scene.y.shape
    linear = np.asarray(scene.y, dtype=np.float64).reshape(h * w, c) @ m.T
    x = nnls_normal(m @ m.T, linear)
    if progress is not None:
        progress(1, 1)
    return SceneResult(x_hat=np.clip(x.T.reshape(m.shape[0], h, w), 0.0, 1.0), spec=Spec())
