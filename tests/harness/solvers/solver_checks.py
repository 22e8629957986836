"""Helpers shared by the solver tests: test maps, the RMSE and consistency they measure.

Test scenes are built from smooth random maps rather than the tier phantoms, so the solver
tests depend only on the forward model: rows 0–3 are a calibration strip of known
composition, and every pixel's fractions sum to at most 1.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import nnls

from harness.dataset import Scene
from harness.forward import ELEMENTS, ForwardModel, Spec
from harness.tiers import REFERENCE_ROWS

#: Composition of the calibration strip of the test scenes (fractions, element order of ELEMENTS).
STRIP_X = np.array([0.2, 0.1, 0.15, 0.1, 0.1, 0.15])


def smooth_maps(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(E, H, W) smooth maps in [0, 1] with per-pixel sums ≤ 1 and the strip at STRIP_X."""
    x = np.stack([gaussian_filter(rng.random((height, width)), 3.0) for _ in ELEMENTS])
    low = x.min(axis=(1, 2), keepdims=True)
    x = (x - low) / (x.max(axis=(1, 2), keepdims=True) - low)
    x /= np.maximum(1.0, x.sum(axis=0))
    x[:, :REFERENCE_ROWS, :] = STRIP_X[:, None, None]
    return x


def rmse_outside_strip(x_hat: np.ndarray, x_true: np.ndarray) -> float:
    """RMSE over the scored area (rows below the strip), as PSNR/SSIM crop it."""
    return float(np.sqrt(np.mean((x_hat - x_true)[:, REFERENCE_ROWS:, :] ** 2)))


def noiseless_consistency(scene: Scene, operator: ForwardModel, x_hat: np.ndarray, spec_hat: Spec) -> float:
    """``1 − ‖ȳ − H(θ̂) x̂‖ / ‖ȳ‖`` with the noiseless ȳ = H(θ) x (design §6)."""
    y_bar = operator.apply(scene.x_true, scene.spec_true)
    return float(1.0 - np.linalg.norm(y_bar - operator.apply(x_hat, spec_hat)) / np.linalg.norm(y_bar))


def per_pixel_nnls(scene: Scene, operator: ForwardModel) -> np.ndarray:
    """Nominal least squares, pixel by pixel with scipy (the baseline the solvers must beat)."""
    m = operator.matrix(Spec())
    height, width = scene.shape
    y = scene.y.reshape(height * width, -1).astype(np.float64)
    x = np.array([nnls(m.T, spectrum)[0] for spectrum in y])
    return np.clip(x, 0.0, 1.0).T.reshape(-1, height, width)
