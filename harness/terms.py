"""The score's terms, written once (design §6): the PSNR cap and normalisation, and the weights
that combine PSNR_norm, SSIM and consistency into the standard and blind scores.

The point scorer (:mod:`harness.scoring`, scalars) and the bootstrap (:mod:`harness.uncertainty`,
arrays of B replicates) both call these, so the replicates are the formulas of the point score
by construction. Each function takes a float or a numpy array and returns the same kind; the
scalar path uses :mod:`math` as ``edx-score-v1`` always did, so point scores stay bit for bit.

.. math::

    \\mathrm{PSNR} = \\min\\Big(100, 10 \\log_{10} \\frac{1}{\\mathrm{MSE}}\\Big)\\ \\mathrm{dB}, \\quad
    \\mathrm{PSNR_{norm}} = \\operatorname{clip}\\Big(\\frac{\\mathrm{PSNR} - 15}{30}, 0, 1\\Big)

    \\mathrm{standard} = 0.5\\,\\mathrm{PSNR_{norm}} + 0.5\\,\\mathrm{SSIM}, \\quad
    \\mathrm{blind} = 0.4\\,\\mathrm{PSNR_{norm}} + 0.4\\,\\mathrm{SSIM} + 0.2\\,\\mathrm{consistency}

A new score term is a constant and a weight here, a field of :class:`harness.scoring.SceneScore`
and a column of :class:`harness.uncertainty.TileStats`.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

__all__ = [
    "BLIND_WEIGHTS",
    "DATA_RANGE",
    "PSNR_CAP_DB",
    "PSNR_FLOOR_DB",
    "PSNR_SPAN_DB",
    "STANDARD_WEIGHTS",
    "blind",
    "psnr_from_mse",
    "psnr_norm",
    "standard",
]

#: Maps are fractions: the data range of PSNR and SSIM.
DATA_RANGE = 1.0
#: PSNR (dB) reported for MSE = 0 and the ceiling of every PSNR: JSON has no infinity, and
#: PSNR_norm is 1 from 45 dB anyway, so the cap never changes a score.
PSNR_CAP_DB = 100.0
#: PSNR_norm is 0 at this PSNR (dB) …
PSNR_FLOOR_DB = 15.0
#: … and 1 this many dB above it.
PSNR_SPAN_DB = 30.0
#: (PSNR_norm, SSIM) weights of the standard score (forward model known).
STANDARD_WEIGHTS = (0.5, 0.5)
#: (PSNR_norm, SSIM, consistency) weights of the blind score: every tier's leaderboard score.
BLIND_WEIGHTS = (0.4, 0.4, 0.2)


@overload
def psnr_from_mse(mse: float) -> float: ...
@overload
def psnr_from_mse(mse: np.ndarray) -> np.ndarray: ...
def psnr_from_mse(mse):
    """``min(PSNR_CAP_DB, 10 log10(DATA_RANGE² / MSE))``; the cap for ``MSE ≤ 0``."""
    if isinstance(mse, np.ndarray):
        positive = mse > 0
        with np.errstate(divide="ignore"):
            db = np.minimum(PSNR_CAP_DB, 10.0 * np.log10(DATA_RANGE**2 / np.where(positive, mse, 1.0)))
        return np.where(positive, db, PSNR_CAP_DB)
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(DATA_RANGE**2 / mse))


@overload
def psnr_norm(psnr_db: float) -> float: ...
@overload
def psnr_norm(psnr_db: np.ndarray) -> np.ndarray: ...
def psnr_norm(psnr_db):
    """Normalised PSNR ``clip((PSNR − 15 dB) / 30 dB, 0, 1)``: 0 at 15 dB, 1 from 45 dB."""
    scaled = (psnr_db - PSNR_FLOOR_DB) / PSNR_SPAN_DB
    if isinstance(scaled, np.ndarray):
        return np.clip(scaled, 0.0, 1.0)
    return float(min(1.0, max(0.0, scaled)))


@overload
def standard(p_norm: float, ssim: float) -> float: ...
@overload
def standard(p_norm: np.ndarray, ssim: np.ndarray) -> np.ndarray: ...
def standard(p_norm, ssim):
    """The standard score ``0.5 PSNR_norm + 0.5 SSIM`` (design §6)."""
    w_psnr, w_ssim = STANDARD_WEIGHTS
    return w_psnr * p_norm + w_ssim * ssim


@overload
def blind(p_norm: float, ssim: float, consistency: float) -> float: ...
@overload
def blind(p_norm: np.ndarray, ssim: np.ndarray, consistency: np.ndarray) -> np.ndarray: ...
def blind(p_norm, ssim, consistency):
    """The blind score ``0.4 PSNR_norm + 0.4 SSIM + 0.2 consistency`` (design §6)."""
    w_psnr, w_ssim, w_cons = BLIND_WEIGHTS
    return w_psnr * p_norm + w_ssim * ssim + w_cons * consistency
