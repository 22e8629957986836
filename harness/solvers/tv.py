"""TV-regularised Poisson reconstruction (EM-TV), numpy only.

Minimises the Poisson negative log-likelihood plus a total-variation prior,

.. math::

    \\min_{x \\ge 0} \\sum_{p,c} (\\lambda_{pc} - y_{pc} \\log \\lambda_{pc})
        + \\alpha \\sum_e \\mathrm{TV}(x_e), \\qquad \\lambda_p = x_p M,

by the EM-TV splitting of Sawatzky, Brune, Wübbeling, Kösters, Schäfers & Burger (2008,
"Accurate EM-TV algorithm in PET with low SNR", doi:10.1109/NSSMIC.2008.4774392): each outer
iteration is one MLEM step ``x½ = x · Hᵀ(y/Hx) / Hᵀ1`` followed by a weighted ROF denoising

.. math::

    x^{k+1} = \\arg\\min_{x \\ge 0} \\tfrac12 \\sum_{p,e} \\frac{s_e}{x^k_{pe}} (x_{pe} - x^{½}_{pe})^2
        + \\alpha \\sum_e \\mathrm{TV}(x_e), \\qquad s = M 1 = H^T 1,

solved with a few Chambolle-Pock primal-dual iterations (Chambolle & Pock 2011,
doi:10.1007/s10851-010-0251-1) whose dual is warm-started across outer iterations. The
weight ``s_e / x`` is the Poisson Fisher information of ``x_e``: bright pixels are trusted
less, which is what makes the splitting a faithful Poisson method. ``TV`` is isotropic
(forward differences, Neumann boundary); ``coupled=True`` uses the vectorial TV
``Σ_p sqrt(Σ_e |∇x_e(p)|²)``, which favours edges shared by all elements (grain
boundaries). ``α = weight · mean(s)``, so ``weight`` is in fraction units and stays
meaningful when the dose changes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.dataset import Scene, SceneResult
from harness.forward import ForwardModel, Spec
from harness.solvers._poisson import EPSILON, Counts, counts_from_cube, mlem_step
from harness.solvers.mlem import initial_maps, mlem

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_WEIGHT", "divergence", "em_tv", "gradient", "solve"]

#: Outer EM-TV iterations and the TV weight, tuned on default-preset tier phantoms at dose 100
#: (blind score 0.785 at weight 0.15 vs 0.758 at 0.1; converged by 30 iterations).
DEFAULT_ITERATIONS = 40
DEFAULT_WEIGHT = 0.15
#: MLEM iterations before the first TV step, so the Fisher weights start from a fitted x.
_WARMUP = 5
_INNER_ITERATIONS = 10
#: Floor on x in the Fisher weight s/x: an exact 0 would pin a pixel there forever.
_X_FLOOR = 1e-3

Progress = Callable[[int, int], None]


def gradient(x: np.ndarray) -> np.ndarray:
    """Forward differences of maps (E, H, W) → (2, E, H, W), zero across the last row/column."""
    g = np.zeros((2, *x.shape))
    g[0, :, :-1, :] = x[:, 1:, :] - x[:, :-1, :]
    g[1, :, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return g


def divergence(q: np.ndarray) -> np.ndarray:
    """``div = −∇ᵀ`` for :func:`gradient`: (2, E, H, W) → (E, H, W)."""
    d = np.zeros(q.shape[1:])
    d[:, :-1, :] += q[0, :, :-1, :]
    d[:, 1:, :] -= q[0, :, :-1, :]
    d[:, :, :-1] += q[1, :, :, :-1]
    d[:, :, 1:] -= q[1, :, :, :-1]
    return d


def _project_dual(q: np.ndarray, bound: float, *, coupled: bool) -> np.ndarray:
    """Project onto ``{|q(p)| ≤ bound}``: per element and pixel, or jointly over elements."""
    if coupled:
        norm = np.sqrt((q**2).sum(axis=(0, 1), keepdims=True))
    else:
        norm = np.sqrt((q**2).sum(axis=0, keepdims=True))
    return q / np.maximum(1.0, norm / bound)


def _weighted_rof(
    f: np.ndarray, w: np.ndarray, alpha: float, q: np.ndarray, *, coupled: bool, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """``argmin_{x≥0} ½ Σ w (x − f)² + α TV(x)`` by Chambolle-Pock; returns (x, dual q).

    Steps ``τ σ ‖∇‖² ≤ 1`` with ``‖∇‖² ≤ 8``; ``σ = 1 / (8 τ)`` and τ sized by the median
    weight so the primal prox neither ignores nor freezes the data.
    """
    tau = 1.0 / max(float(np.median(w)), EPSILON)
    sigma = 1.0 / (8.0 * tau)
    x = f.copy()
    x_bar = x
    for _ in range(iterations):
        q = _project_dual(q + sigma * gradient(x_bar), alpha, coupled=coupled)
        v = x + tau * divergence(q)
        x_new = np.maximum((v + tau * w * f) / (1.0 + tau * w), 0.0)
        x_bar = 2.0 * x_new - x
        x = x_new
    return x, q


def em_tv(
    counts: Counts,
    matrix: np.ndarray,
    shape: tuple[int, int],
    *,
    iterations: int = DEFAULT_ITERATIONS,
    weight: float = DEFAULT_WEIGHT,
    coupled: bool = False,
    x0: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """EM-TV maps (N, E), non-negative (not clipped to 1); see the module docstring.

    Parameters
    ----------
    counts : Counts
        Sparse counts, N = H·W pixels in row-major order.
    matrix : ndarray, shape (E, C)
        Expected counts per unit fraction.
    shape : (H, W)
        Scan grid, for the image gradient.
    iterations : int
        Outer (MLEM + TV) iterations.
    weight : float
        TV weight in fraction units, ``α = weight · mean(M 1)``; 0 gives plain MLEM.
    coupled : bool
        Vectorial TV across elements (shared edges) instead of one TV per element.
    x0 : ndarray (N, E), optional
        Start; a few plain MLEM iterations from :func:`~harness.solvers.mlem.initial_maps`
        when omitted.
    progress : callable(done, total), optional
        Called after each outer iteration.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be ≥ 1; got {iterations}")
    if weight < 0:
        raise ValueError(f"weight must be ≥ 0; got {weight}")
    height, width = shape
    if height * width != counts.n_pixels:
        raise ValueError(f"shape {shape} does not hold the {counts.n_pixels} pixels of the counts")
    n_elements = matrix.shape[0]
    sensitivity = matrix.sum(axis=1)
    alpha = weight * float(sensitivity.mean())
    if x0 is None:
        x = mlem(counts, matrix, iterations=_WARMUP, x0=initial_maps(counts, matrix))
    else:
        x = np.array(x0, dtype=np.float64)
    dual = np.zeros((2, n_elements, height, width))
    for i in range(iterations):
        half = mlem_step(counts, x, matrix, sensitivity)
        if alpha > 0:
            fisher = sensitivity[:, None] / np.maximum(x.T, _X_FLOOR)  # (E, N)
            maps, dual = _weighted_rof(
                half.T.reshape(n_elements, height, width),
                fisher.reshape(n_elements, height, width),
                alpha,
                dual,
                coupled=coupled,
                iterations=_INNER_ITERATIONS,
            )
            x = np.maximum(maps.reshape(n_elements, -1).T, _X_FLOOR * 1e-3)
        else:
            x = half
        if progress is not None:
            progress(i + 1, iterations)
    return x


def solve(
    scene: Scene,
    operator: ForwardModel,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    weight: float = DEFAULT_WEIGHT,
    coupled: bool = False,
    progress: Progress | None = None,
) -> SceneResult:
    """EM-TV with the nominal operator ``H(0)``; maps clipped to [0, 1], θ̂ = nominal.

    Options as in :func:`em_tv`.
    """
    height, width = scene.shape
    counts = counts_from_cube(scene.y)
    x = em_tv(
        counts,
        operator.matrix(Spec()),
        (height, width),
        iterations=iterations,
        weight=weight,
        coupled=coupled,
        progress=progress,
    )
    return SceneResult(x_hat=np.clip(x, 0.0, 1.0).T.reshape(-1, height, width), spec=Spec())
