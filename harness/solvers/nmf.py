"""PCA denoise-then-unmix: Poisson-scaled PCA of the cube, then per-pixel NNLS.

The common EDX workflow (Keenan & Kotula 2004, doi:10.1002/sia.1657; HyperSpy's
``decomposition(normalize_poissonian_noise=True)``):

1. Scale the (N, C) count matrix so Poisson noise is roughly uniform,
   ``Ỹ = diag(g)^(−½) Y diag(h)^(−½)`` with ``g`` the pixel totals and ``h`` the mean
   spectrum, and keep its ``k`` leading right singular vectors ``V_k`` (C, k), from the
   eigenvectors of the C × C Gram matrix ``ỸᵀỸ`` (built from the sparse counts).
2. Denoise: ``Ŷ = diag(g)^½ Ỹ V_k V_kᵀ diag(h)^½``, the rank-k part of the cube.
3. Unmix each pixel with non-negative least squares weighted by the mean spectrum
   (an approximation of the Poisson likelihood),
   ``min_{x ≥ 0} Σ_c (ŷ_pc − x_p M_c)² / h_c``.

The denoised cube is never formed: step 3 needs only ``Q = M diag(1/h) Mᵀ`` (E, E) and
``r_p = ŷ_p diag(1/h) Mᵀ`` (E,), and ``r`` follows from the k PCA scores of each pixel, so
memory stays O(N·(k + E) + nnz); the NNLS is the exact vectorised
:func:`harness.solvers.nnls.nnls_normal`. ``k ≥ E + 1`` keeps the E element signatures
(the continuum folds into them, design §2) plus one direction for the operator mismatch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse

from harness.dataset import Scene, SceneResult
from harness.forward import ForwardModel, Spec
from harness.solvers._poisson import EPSILON, Counts, counts_from_cube
from harness.solvers.nnls import nnls_normal

__all__ = ["pca_basis", "pca_unmix", "solve"]

Progress = Callable[[int, int], None]


def pca_basis(counts: Counts, *, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson-scaled PCA of the counts.

    Returns ``(basis, pixel_scale, channel_scale)``: ``basis`` (C, k) the leading right
    singular vectors of ``Ỹ = diag(g)^(−½) Y diag(h)^(−½)``, and the ``g^½`` (N,) and
    ``h^½`` (C,) scales. Channels and pixels without a single count get scale 0 (they
    carry no information and would divide by 0).
    """
    y = counts.matrix
    n_pixels, n_channels = y.shape
    if not 1 <= components <= n_channels:
        raise ValueError(f"components must be in [1, {n_channels}]; got {components}")
    g = np.asarray(y.sum(axis=1)).ravel()
    h = np.asarray(y.sum(axis=0)).ravel() / max(n_pixels, 1)
    inv_g = np.where(g > 0, 1.0 / np.sqrt(np.maximum(g, EPSILON)), 0.0)
    inv_h = np.where(h > 0, 1.0 / np.sqrt(np.maximum(h, EPSILON)), 0.0)
    # Elementwise scaling rather than sparse.diags_array (scipy ≥ 1.11): the reference image
    # runs Debian bookworm's scipy 1.10.
    scaled = scipy.sparse.csr_array(y.multiply(inv_g[:, None]).multiply(inv_h[None, :]))
    gram = (scaled.T @ scaled).toarray() if scipy.sparse.issparse(scaled) else scaled.T @ scaled
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:components]
    return eigenvectors[:, order], np.sqrt(g), np.sqrt(h)


def pca_unmix(
    counts: Counts,
    matrix: np.ndarray,
    *,
    components: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """Denoise with ``components`` Poisson-scaled PCA components, then weighted NNLS; (N, E).

    ``progress(done, 2)`` is called after the PCA and after the unmixing.
    """
    basis, g_half, h_half = pca_basis(counts, components=components)
    if progress is not None:
        progress(1, 2)
    inv_h_half = np.where(h_half > 0, 1.0 / np.maximum(h_half, EPSILON), 0.0)
    inv_g_half = np.where(g_half > 0, 1.0 / np.maximum(g_half, EPSILON), 0.0)
    # Scores z_p = ỹ_p V_k (N, k); ŷ_p = g_p^½ z_p V_kᵀ diag(h^½).
    scores = (counts.matrix @ (inv_h_half[:, None] * basis)) * inv_g_half[:, None]
    weighted_matrix = matrix * inv_h_half[None, :]  # M diag(h^−½)
    linear = (scores * g_half[:, None]) @ (basis.T @ weighted_matrix.T)  # ŷ diag(1/h) Mᵀ
    gram = weighted_matrix @ weighted_matrix.T
    x = nnls_normal(gram, linear)
    if progress is not None:
        progress(2, 2)
    return x


def solve(
    scene: Scene,
    operator: ForwardModel,
    *,
    components: int | None = None,
    progress: Progress | None = None,
) -> SceneResult:
    """PCA denoise-then-unmix with the nominal operator; maps clipped to [0, 1], θ̂ = nominal.

    Parameters
    ----------
    components : int, optional
        PCA components kept; default E + 1. Must be ≥ E + 1 so every element signature
        fits in the denoised subspace.
    progress : callable(done, total), optional
        Called after the PCA (1/2) and after the unmixing (2/2).
    """
    matrix = operator.matrix(Spec())
    n_elements = matrix.shape[0]
    k = n_elements + 1 if components is None else components
    if k < n_elements + 1:
        raise ValueError(f"components must be ≥ E + 1 = {n_elements + 1} to keep every element; got {k}")
    height, width = scene.shape
    counts = counts_from_cube(scene.y)
    x = pca_unmix(counts, matrix, components=k, progress=progress)
    return SceneResult(x_hat=np.clip(x, 0.0, 1.0).T.reshape(-1, height, width), spec=Spec())
