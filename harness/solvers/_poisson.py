"""The Poisson data term on a sparse view of a count cube, shared by the Poisson solvers.

At dose 100 a pixel holds about 100 counts spread over up to 1000 channels, so most
channels read 0. A channel with ``y = 0`` contributes only ``−λ`` to the log-likelihood
(``0 · log λ = 0``, also when λ = 0), and ``Σ_c λ_pc = x_p · (M 1)`` needs no cube at all.
Keeping only the non-zero counts makes every likelihood, MLEM step and θ fit cost
O(nnz · E) instead of O(H · W · C · E), and bounds memory by the counts themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

__all__ = [
    "EPSILON",
    "Counts",
    "counts_from_cube",
    "expected_at_counts",
    "log_likelihood",
    "mlem_step",
    "reference_pixels",
]

#: Floor on expected counts and on denominators: guards y/λ where λ underflows.
EPSILON = 1e-12


@dataclass(frozen=True)
class Counts:
    """Non-zero counts of a cube flattened to (N = H·W, C), in CSR order.

    ``matrix`` is the (N, C) CSR matrix; ``rows``/``cols``/``values`` its COO triplets.
    """

    matrix: scipy.sparse.csr_array
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    @property
    def n_pixels(self) -> int:
        return int(self.matrix.shape[0])

    def subset(self, pixels: np.ndarray) -> Counts:
        """The counts of the given pixel indices (in that order)."""
        return _from_csr(self.matrix[np.asarray(pixels)])


def _from_csr(matrix: scipy.sparse.csr_array) -> Counts:
    matrix = scipy.sparse.csr_array(matrix)
    matrix.sum_duplicates()
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.intp), np.diff(matrix.indptr))
    return Counts(matrix, rows, matrix.indices.astype(np.intp), matrix.data)


def counts_from_cube(y: np.ndarray, *, chunk_pixels: int = 4096) -> Counts:
    """Sparse counts of a cube ``y`` (H, W, C).

    Negative values (Gaussian read noise, design §2) are clipped to 0: a Poisson model has
    no negative counts, and clipping is the usual shifted-Poisson shortcut. Converted in
    chunks of pixels so no float64 copy of the whole cube is made.
    """
    y = np.asarray(y)
    if y.ndim != 3:
        raise ValueError(f"y must be a cube (H, W, C); got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y holds NaN or inf; a measurement must be finite counts")
    flat = y.reshape(-1, y.shape[2])
    blocks = []
    for start in range(0, flat.shape[0], chunk_pixels):
        block = np.clip(flat[start : start + chunk_pixels].astype(np.float64), 0.0, None)
        blocks.append(scipy.sparse.csr_array(block))
    return _from_csr(scipy.sparse.vstack(blocks, format="csr"))


def expected_at_counts(counts: Counts, x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``λ_pc = Σ_e x_pe M_ec`` at the non-zero counts only, shape (nnz,).

    ``x`` is (N, E) pixels × elements; one gather per element keeps memory at O(nnz).
    """
    lam = np.zeros(counts.values.shape, dtype=np.float64)
    for e in range(matrix.shape[0]):
        lam += x[counts.rows, e] * matrix[e, counts.cols]
    return lam


def log_likelihood(counts: Counts, x: np.ndarray, matrix: np.ndarray) -> float:
    """Poisson log-likelihood without the data-only term, summed over pixels and channels.

    ``L = Σ_{y>0} y log λ − Σ_p x_p · (M 1)``; channels with ``y = 0`` contribute only
    ``−λ`` (the 0 · log 0 = 0 guard), so channels where λ = 0 and y = 0 add nothing. A
    positive count where λ = 0 would make L = −∞; λ is floored at :data:`EPSILON` instead.
    """
    lam = expected_at_counts(counts, x, matrix)
    return float(counts.values @ np.log(np.maximum(lam, EPSILON)) - x.sum(axis=0) @ matrix.sum(axis=1))


def mlem_step(counts: Counts, x: np.ndarray, matrix: np.ndarray, sensitivity: np.ndarray) -> np.ndarray:
    """One MLEM update ``x ← x · Hᵀ(y / Hx) / Hᵀ1``, returns the new (N, E) maps.

    ``sensitivity`` is ``Hᵀ1 = M 1`` (E,). Only ``y > 0`` enters the back-projected ratio;
    a zero count back-projects 0, so the update never divides 0 by 0.
    """
    lam = expected_at_counts(counts, x, matrix)
    ratio = counts.values / np.maximum(lam, EPSILON)
    ratio_matrix = scipy.sparse.csr_array(
        (ratio, counts.matrix.indices, counts.matrix.indptr), shape=counts.matrix.shape
    )
    back = ratio_matrix @ matrix.T
    return x * back / np.maximum(sensitivity, EPSILON)


def reference_pixels(mask: np.ndarray) -> np.ndarray:
    """Flat indices (into N = H·W) of the calibration-strip pixels."""
    return np.flatnonzero(np.asarray(mask, dtype=bool).ravel())
