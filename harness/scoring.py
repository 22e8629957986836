"""Scoring, version ``edx-score-v2`` (design §6): the ``edx-score-v1`` point scores, unchanged,
each with a 95 % block-bootstrap interval (issue 10, :mod:`harness.uncertainty`).

Per scene, with ground truth ``x`` (E, H, W), the participant's maps ``x̂`` and corrected
spec ``θ̂``, the true spec ``θ``, the measurement ``y`` and the noiseless expected counts
``ȳ = H(θ) x`` (server-only):

1. **Sanitise** ``x̂``: NaN and ±inf become 0 (their number is ``nonfinite_count``), then
   ``x̂`` is clipped to [0, 1].
2. **Crop** the calibration strip: PSNR and SSIM use ``x[:, REFERENCE_ROWS:, :]``; its
   composition is published, so reproducing it earns nothing. Consistency covers the whole
   scene.
3. **PSNR** over the whole cropped (E, H', W) stack, data range 1:
   ``PSNR = 10 log10(1 / MSE)`` dB, capped at :data:`PSNR_CAP_DB` (100 dB), which is what a
   perfect answer (MSE = 0, PSNR = ∞) reports, because JSON has no infinity. The cap never
   changes a score: ``PSNR_norm = clip((PSNR − 15) / 30, 0, 1)`` is already 1 from 45 dB.
4. **SSIM**: the mean over elements of the 2-D SSIM of each cropped element map
   (scikit-image ``structural_similarity``, data range 1, 7 × 7 uniform window, sample
   covariance, K1 = 0.01, K2 = 0.03: the library defaults, passed explicitly). Not 3-D SSIM.
5. **Consistency** ``= clip(1 − ‖ȳ − H(θ̂) x̂‖₂ / ‖ȳ‖₂, 0, 1)`` over the whole cube; this
   noiseless variant is the scored one (:data:`SCORED_CONSISTENCY`). The same with the noisy
   ``y`` in place of ``ȳ`` is reported as ``consistency_measured``, never scored.
6. ``standard = 0.5 PSNR_norm + 0.5 SSIM``; ``blind = 0.4 PSNR_norm + 0.4 SSIM +
   0.2 consistency``.

**Out-of-range θ̂.** Before ``H(θ̂)`` is built, each parameter of θ̂ is clamped to the tier's
published range (the dataset's ``ranges``); a NaN becomes the nominal value 0 (clamped into
the range the same way). A θ̂ outside physical sense (``detector_solid_angle ≤ −0.7`` makes
the gain ≤ 0; ``inf`` overflows the absorption factor) therefore never reaches the operator,
and the names of the clamped parameters are reported in ``spec_clamped``. The true θ always
lies inside the published range, so clamping can only move θ̂ towards it: it never lowers a
score. ``spec_error = |θ̂_clamped − θ|`` per parameter (finite, JSON-ready). On the Standard
track the range is {0}, so θ̂ is the nominal spec whatever the participant wrote.

A tier score is the mean over its scenes of every term; the overall score is the mean of the
Public, Dev and Hidden tier scores and exists only when all three are present.

**Intervals (v2).** Scoring a scene also keeps per-tile sufficient statistics
(:class:`harness.uncertainty.TileStats`: 16 × 16-pixel tiles; squared errors, the per-pixel
SSIM map summed per tile, consistency residual and reference norms). :func:`score_tier`
resamples the tiles of each scene B = 1000 times with a seed derived from the dataset hash
and the scene id, so every entry of a tier shares resamples, and reports the percentile
interval of every scene and of the tier score; the tier's score replicates
(:attr:`TierScore.draws`) let two entries be compared pairwise and the overall interval be
built (:func:`overall_draws`). v1 and v2 give bit-identical point scores for the same inputs.

All functions are pure (arrays in, numbers out, no I/O); they validate shapes first, then
promote to float64, then compute.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from skimage.metrics import structural_similarity

from harness.dataset import Result, Scene, SceneResult, TierDataset
from harness.forward import ForwardModel, Spec
from harness.terms import DATA_RANGE, PSNR_CAP_DB, blind, psnr_from_mse, psnr_norm, standard
from harness.tiers import BLIND_TIERS, REFERENCE_ROWS, SPEC_PARAMETERS, TIER_RANGES, tier_rules
from harness.uncertainty import (
    CONFIDENCE,
    N_RESAMPLES,
    TILE_SIZE,
    Draws,
    TileStats,
    mean_draws,
    percentile_interval,
    resample_counts,
    resample_seed,
    scene_draws,
    tile_stats,
)

__all__ = [
    "PSNR_CAP_DB",
    "SCORED_CONSISTENCY",
    "SCORER_VERSION",
    "SSIM_WIN_SIZE",
    "SceneScore",
    "TierScore",
    "clamp_spec",
    "consistency",
    "overall_draws",
    "overall_score",
    "psnr",
    "psnr_norm",
    "resample_key",
    "sanitize_maps",
    "score_scene",
    "score_tier",
    "ssim_maps",
]

SCORER_VERSION = "edx-score-v2"
#: Which consistency is scored: ``"noiseless"`` (against ȳ = H(θ) x, design §6); the
#: ``"measured"`` variant (against the noisy y) is reported only.
SCORED_CONSISTENCY = "noiseless"
#: Side of the square SSIM window (pixels).
SSIM_WIN_SIZE = 7

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
#: Pixels × channels per block when accumulating the consistency norms: keeps the
#: temporaries near 8 MiB instead of several copies of a 131 MB cube.
_BLOCK_ELEMENTS = 1 << 20


# -- pure metrics --------------------------------------------------------------------------


def sanitize_maps(x_hat: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN/±inf by 0, then clip to [0, 1].

    Parameters
    ----------
    x_hat : ndarray
        The participant's maps, any shape, any real dtype.

    Returns
    -------
    maps : ndarray
        A new float64 array, ``clip(where(isfinite(x̂), x̂, 0), 0, 1)``.
    nonfinite_count : int
        How many entries were NaN or ±inf.
    """
    x = np.array(x_hat, dtype=np.float64, copy=True)
    bad = ~np.isfinite(x)
    count = int(np.count_nonzero(bad))
    if count:
        x[bad] = 0.0
    np.clip(x, 0.0, 1.0, out=x)
    return x, count


def _check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape; got {a.shape} and {b.shape}")


def psnr(x_true: np.ndarray, x_hat: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) over the whole array, data range 1.

    .. math:: \\mathrm{PSNR} = 10 \\log_{10} \\frac{1^2}{\\mathrm{MSE}}, \\quad
              \\mathrm{MSE} = \\frac{1}{N} \\sum_i (x_i - \\hat x_i)^2

    capped at :data:`PSNR_CAP_DB` (also the value for MSE = 0). The scorer passes the
    cropped, sanitised stack; this function crops nothing.

    Parameters
    ----------
    x_true, x_hat : ndarray
        Same shape, any real dtype (accumulated in float64).

    Returns
    -------
    float
        PSNR in dB, in (−∞, 100].
    """
    a = np.asarray(x_true)
    b = np.asarray(x_hat)
    _check_same_shape("x_true", a, "x_hat", b)
    if a.size == 0:
        raise ValueError(f"psnr needs non-empty arrays; got shape {a.shape}")
    d = a.astype(np.float64, copy=False) - b.astype(np.float64, copy=False)
    return psnr_from_mse(float(np.vdot(d.ravel(), d.ravel())) / d.size)


def ssim_maps(x_true: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """2-D SSIM of each element map, shape (E,).

    For each element e, scikit-image's ``structural_similarity(x_true[e], x_hat[e])`` with
    ``data_range=1``, a 7 × 7 uniform window, sample covariance and K1 = 0.01, K2 = 0.03:

    .. math:: \\mathrm{SSIM} = \\operatorname{mean}_{\\text{windows}}
              \\frac{(2 \\mu_x \\mu_{\\hat x} + C_1)(2 \\sigma_{x \\hat x} + C_2)}
                    {(\\mu_x^2 + \\mu_{\\hat x}^2 + C_1)(\\sigma_x^2 + \\sigma_{\\hat x}^2 + C_2)},
              \\quad C_1 = (0.01)^2, \\; C_2 = (0.03)^2

    Wang et al. (2004), DOI:10.1109/TIP.2003.819861. C1, C2 > 0 keep constant maps finite
    (two equal constant maps give 1). The scorer's SSIM is the mean of this vector.

    Parameters
    ----------
    x_true, x_hat : ndarray
        (E, H, W), same shape, H and W at least 7.
    """
    a = np.asarray(x_true)
    b = np.asarray(x_hat)
    _check_same_shape("x_true", a, "x_hat", b)
    if a.ndim != 3 or a.shape[1] < SSIM_WIN_SIZE or a.shape[2] < SSIM_WIN_SIZE:
        raise ValueError(f"ssim_maps needs (E, H, W) maps with H, W >= {SSIM_WIN_SIZE}; got shape {a.shape}")
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    return np.array([_ssim_2d(a[e], b[e]) for e in range(a.shape[0])], dtype=np.float64)


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    return _ssim_2d_full(a, b)[0]


def _ssim_2d_full(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean SSIM and the per-pixel SSIM map (H, W); the mean is the map's mean over the
    interior ``(SSIM_WIN_SIZE − 1) // 2`` pixels from the border (scikit-image's own crop),
    the same number ``full=False`` returns."""
    mssim, smap = structural_similarity(
        a,
        b,
        data_range=DATA_RANGE,
        win_size=SSIM_WIN_SIZE,
        gaussian_weights=False,
        use_sample_covariance=True,
        K1=_SSIM_K1,
        K2=_SSIM_K2,
        full=True,
    )
    return float(mssim), smap


def _consistency_from_sums(residual_sq: float, reference_sq: float) -> float:
    # ‖ȳ‖ = 0 only for an empty scene: then a zero prediction is perfectly consistent.
    if reference_sq <= 0.0:
        return 1.0 if residual_sq <= 0.0 else 0.0
    return float(min(1.0, max(0.0, 1.0 - math.sqrt(residual_sq / reference_sq))))


def consistency(y_ref: np.ndarray, y_pred: np.ndarray) -> float:
    """Data consistency ``clip(1 − ‖y_ref − y_pred‖₂ / ‖y_ref‖₂, 0, 1)``.

    Norms are Frobenius norms over the whole cube. If ``‖y_ref‖ = 0`` the value is 1 when
    ``y_pred`` is also zero, else 0.

    Parameters
    ----------
    y_ref : ndarray
        (H, W, C) reference counts: ȳ = H(θ) x for the scored variant, y for the measured one.
    y_pred : ndarray
        (H, W, C) the participant's prediction H(θ̂) x̂.
    """
    a = np.asarray(y_ref)
    b = np.asarray(y_pred)
    _check_same_shape("y_ref", a, "y_pred", b)
    a = a.astype(np.float64, copy=False).ravel()
    r = a - b.astype(np.float64, copy=False).ravel()
    return _consistency_from_sums(float(np.vdot(r, r)), float(np.vdot(a, a)))


def clamp_spec(spec: Spec, ranges: Mapping[str, tuple[float, float]]) -> tuple[Spec, tuple[str, ...]]:
    """Clamp each parameter of θ̂ to ``ranges`` (NaN → nominal 0, then clamped).

    Returns
    -------
    spec : Spec
        The θ̂ the operator is built with.
    clamped : tuple of str
        Names of the parameters that changed, in :data:`SPEC_PARAMETERS` order.
    """
    values: dict[str, float] = {}
    clamped: list[str] = []
    for name in SPEC_PARAMETERS:
        lo, hi = ranges[name]
        raw = float(getattr(spec, name))
        value = 0.0 if math.isnan(raw) else raw
        value = min(hi, max(lo, value))
        if value != raw:  # NaN != anything, so a NaN is always reported
            clamped.append(name)
        values[name] = value
    return Spec(**values), tuple(clamped)


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneScore:
    """Scores of one scene (design §6); every float is finite, :meth:`as_dict` is JSON-ready.

    ``psnr`` (dB, capped at 100) and ``ssim`` are on the cropped maps; ``consistency`` is the
    scored (noiseless) variant, ``consistency_measured`` the reported one; ``spec_error`` maps
    each parameter to ``|θ̂_clamped − θ|``; ``per_element`` maps each element to
    ``{"psnr", "ssim"}``; ``spec_clamped`` names the parameters of θ̂ clamped to the range.

    v2: ``tile_stats`` are the per-tile sums the bootstrap resamples (None when not kept);
    ``ci_low`` / ``ci_high`` the 95 % interval of the scene's leaderboard score (blind, or
    standard on the Standard track), set by :func:`score_tier` (None without intervals).
    """

    scene_id: str
    psnr: float
    psnr_norm: float
    ssim: float
    consistency: float
    consistency_measured: float
    standard: float
    blind: float
    spec_error: dict[str, float]
    per_element: dict[str, dict[str, float]]
    nonfinite_count: int
    spec_clamped: tuple[str, ...] = field(default=())
    tile_stats: TileStats | None = field(default=None, repr=False, compare=False)
    ci_low: float | None = None
    ci_high: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready scores (the tile statistics are separate: :meth:`TileStats.as_json`)."""
        return {
            "scene_id": self.scene_id,
            "psnr": float(self.psnr),
            "psnr_norm": float(self.psnr_norm),
            "ssim": float(self.ssim),
            "consistency": float(self.consistency),
            "consistency_measured": float(self.consistency_measured),
            "standard": float(self.standard),
            "blind": float(self.blind),
            "spec_error": {k: float(v) for k, v in self.spec_error.items()},
            "per_element": {e: {k: float(v) for k, v in d.items()} for e, d in self.per_element.items()},
            "nonfinite_count": int(self.nonfinite_count),
            "spec_clamped": list(self.spec_clamped),
            "ci_low": None if self.ci_low is None else float(self.ci_low),
            "ci_high": None if self.ci_high is None else float(self.ci_high),
        }


@dataclass(frozen=True)
class TierScore:
    """Scores of one tier: the mean over its scenes of every term.

    :attr:`score` is the leaderboard score: ``blind`` for Public/Dev/Hidden, ``standard``
    for the Standard track.

    v2: ``ci_low`` / ``ci_high`` are the :data:`~harness.uncertainty.CONFIDENCE` percentile
    interval of :attr:`score`; ``draws`` its B bootstrap replicates (every term), paired with
    any other result scored against the dataset whose resamples ``resample_key`` names.
    All three are None (and ``n_resamples`` 0) when intervals were not asked for.
    """

    tier: str
    scenes: list[SceneScore]
    psnr: float
    psnr_norm: float
    ssim: float
    consistency: float
    consistency_measured: float
    standard: float
    blind: float
    ci_low: float | None = None
    ci_high: float | None = None
    draws: Draws | None = field(default=None, repr=False, compare=False)
    resample_key: str = ""
    n_resamples: int = 0
    confidence: float = CONFIDENCE

    @property
    def score(self) -> float:
        return self.standard if tier_rules(self.tier).score == "standard" else self.blind

    @property
    def score_draws(self) -> np.ndarray | None:
        """The B replicates of :attr:`score` (None without intervals)."""
        return None if self.draws is None else self.draws.score(self.tier)

    def as_dict(self) -> dict:
        return {
            "scorer_version": SCORER_VERSION,
            "scored_consistency": SCORED_CONSISTENCY,
            "tier": self.tier,
            "score": float(self.score),
            "psnr": float(self.psnr),
            "psnr_norm": float(self.psnr_norm),
            "ssim": float(self.ssim),
            "consistency": float(self.consistency),
            "consistency_measured": float(self.consistency_measured),
            "standard": float(self.standard),
            "blind": float(self.blind),
            "ci_low": None if self.ci_low is None else float(self.ci_low),
            "ci_high": None if self.ci_high is None else float(self.ci_high),
            "confidence": float(self.confidence),
            "n_resamples": int(self.n_resamples),
            "tile_size": TILE_SIZE,
            "resample_key": self.resample_key,
            "scenes": [s.as_dict() for s in self.scenes],
        }


# -- scoring -------------------------------------------------------------------------------


def _all_blind_ranges() -> dict[str, tuple[float, float]]:
    return {
        name: (
            min(TIER_RANGES[t][name][0] for t in BLIND_TIERS),
            max(TIER_RANGES[t][name][1] for t in BLIND_TIERS),
        )
        for name in SPEC_PARAMETERS
    }


def _residual_sums(
    x_true: np.ndarray,
    x_hat: np.ndarray,
    y: np.ndarray,
    y_bar: np.ndarray | None,
    m_true: np.ndarray,
    m_hat: np.ndarray,
    per_pixel: bool = False,
) -> tuple[float, float, float, float, np.ndarray | None, np.ndarray | None]:
    """``‖ȳ − ŷ‖², ‖ȳ‖², ‖y − ŷ‖², ‖y‖²`` with ``ŷ = x̂ · M(θ̂)``, in pixel blocks, and with
    ``per_pixel`` also ``Σ_c (ȳ − ŷ)²`` and ``Σ_c ȳ²`` per pixel, shape (H·W,) (else None).

    One pass over y, no full-size temporaries: the same sums as the cube formulas, each
    block's matrix product computed once and reused for both residuals. The four totals are
    accumulated exactly as in v1 (the per-pixel sums are extra), so point scores do not move.
    """
    e, h, w = x_hat.shape
    p = h * w
    c = m_hat.shape[1]
    xt = x_true.reshape(e, p)
    xh = x_hat.reshape(e, p)
    yf = y.reshape(p, c)
    ybf = None if y_bar is None else y_bar.reshape(p, c)
    step = max(1, _BLOCK_ELEMENTS // c)
    sums = [0.0, 0.0, 0.0, 0.0]
    res_px = np.empty(p) if per_pixel else None
    ref_px = np.empty(p) if per_pixel else None
    for start in range(0, p, step):
        block = slice(start, min(p, start + step))
        pred = xh[:, block].T @ m_hat
        measured = yf[block].astype(np.float64)  # always a fresh copy: modified in place below
        sums[3] += float(np.vdot(measured.ravel(), measured.ravel()))
        measured -= pred
        sums[2] += float(np.vdot(measured.ravel(), measured.ravel()))
        if ybf is None:
            ref = xt[:, block].T @ m_true
        else:
            ref = np.asarray(ybf[block], dtype=np.float64)  # may be the caller's memory: read only
        sums[1] += float(np.vdot(ref.ravel(), ref.ravel()))
        if ref_px is not None:
            np.einsum("pc,pc->p", ref, ref, out=ref_px[block])
        np.subtract(ref, pred, out=pred)
        sums[0] += float(np.vdot(pred.ravel(), pred.ravel()))
        if res_px is not None:
            np.einsum("pc,pc->p", pred, pred, out=res_px[block])
    return sums[0], sums[1], sums[2], sums[3], res_px, ref_px


def score_scene(
    scene: Scene,
    result: SceneResult,
    *,
    operator: ForwardModel,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    y_bar: np.ndarray | None = None,
    keep_tile_stats: bool = True,
) -> SceneScore:
    """Score one scene with ``edx-score-v2`` (formulas in the module docstring).

    Parameters
    ----------
    scene : Scene
        With truth (``x_true`` (E, H, W) and ``spec_true``) and the measurement ``y`` (H, W, C).
    result : SceneResult
        The participant's ``x_hat`` (E, H, W), any real dtype, and corrected ``spec``.
    operator : ForwardModel
        The tier's operator; its element order is the maps' element order.
    ranges : mapping, optional
        Published θ ranges θ̂ is clamped to (the dataset's ``ranges``). Default: the union
        of the Public, Dev and Hidden ranges.
    y_bar : ndarray, optional
        (H, W, C) precomputed noiseless counts ``H(θ) x``; computed when omitted.
    keep_tile_stats : bool
        Keep the per-tile sums the bootstrap needs (:attr:`SceneScore.tile_stats`); the
        point scores are the same either way.

    Raises
    ------
    ValueError
        The scene has no truth, or an array's shape does not match the operator and grid.
    """
    if scene.x_true is None or scene.spec_true is None:
        raise ValueError(f"scene {scene.scene_id!r} has no truth; scoring needs x_true and spec_true")
    n_el = len(operator.elements)
    n_ch = operator.preset.channels
    x_true = np.asarray(scene.x_true)
    x_hat_in = np.asarray(result.x_hat)
    y = np.asarray(scene.y)
    if x_true.ndim != 3 or x_true.shape[0] != n_el:
        raise ValueError(f"x_true must be (E={n_el}, H, W); got shape {x_true.shape}")
    _, h, w = x_true.shape
    if x_hat_in.shape != x_true.shape:
        raise ValueError(f"x_hat must have the shape of x_true {x_true.shape}; got {x_hat_in.shape}")
    if y.shape != (h, w, n_ch):
        raise ValueError(f"y must be (H={h}, W={w}, C={n_ch}); got shape {y.shape}")
    if y_bar is not None and np.shape(y_bar) != y.shape:
        raise ValueError(f"y_bar must have the shape of y {y.shape}; got {np.shape(y_bar)}")
    if h - REFERENCE_ROWS < SSIM_WIN_SIZE or w < SSIM_WIN_SIZE:
        raise ValueError(
            f"scene grid {h}×{w} is too small: scoring needs at least "
            f"{REFERENCE_ROWS + SSIM_WIN_SIZE}×{SSIM_WIN_SIZE} pixels"
        )

    x_true = x_true.astype(np.float64, copy=False)
    x_hat, nonfinite = sanitize_maps(x_hat_in)

    # Image terms on the maps without the calibration strip.
    a = x_true[:, REFERENCE_ROWS:, :]
    b = x_hat[:, REFERENCE_ROWS:, :]
    d = a - b
    mse_el = np.einsum("ehw,ehw->e", d, d) / (d.shape[1] * d.shape[2])
    psnr_db = psnr_from_mse(float(mse_el.mean()))
    full_ssim = [_ssim_2d_full(a[e], b[e]) for e in range(a.shape[0])]
    ssim_el = np.array([m for m, _ in full_ssim], dtype=np.float64)
    ssim_mean = float(ssim_el.mean())
    p_norm = psnr_norm(psnr_db)

    # Data terms on the whole scene, with θ̂ kept inside the published ranges.
    spec_used, clamped = clamp_spec(result.spec, _all_blind_ranges() if ranges is None else ranges)
    res_bar, ref_bar, res_y, ref_y, res_px, ref_px = _residual_sums(
        x_true,
        x_hat,
        y,
        y_bar,
        operator.matrix(scene.spec_true),
        operator.matrix(spec_used),
        per_pixel=keep_tile_stats,
    )
    cons = _consistency_from_sums(res_bar, ref_bar)
    cons_measured = _consistency_from_sums(res_y, ref_y)

    truth = scene.spec_true
    return SceneScore(
        scene_id=scene.scene_id,
        psnr=psnr_db,
        psnr_norm=p_norm,
        ssim=ssim_mean,
        consistency=cons,
        consistency_measured=cons_measured,
        standard=standard(p_norm, ssim_mean),
        blind=blind(p_norm, ssim_mean, cons),
        spec_error={n: abs(float(getattr(spec_used, n)) - float(getattr(truth, n))) for n in SPEC_PARAMETERS},
        per_element={
            el: {"psnr": psnr_from_mse(float(mse_el[i])), "ssim": float(ssim_el[i])}
            for i, el in enumerate(operator.elements)
        },
        nonfinite_count=nonfinite,
        spec_clamped=clamped,
        tile_stats=None
        if res_px is None or ref_px is None
        else tile_stats(
            np.einsum("ehw,ehw->hw", d, d),
            np.stack([smap for _, smap in full_ssim]),
            res_px.reshape(h, w),
            ref_px.reshape(h, w),
            image_row_offset=REFERENCE_ROWS,
            ssim_pad=(SSIM_WIN_SIZE - 1) // 2,
            tile_size=TILE_SIZE,
        ),
    )


def resample_key(dataset_hash: str, scene_ids: list[str], *, n_resamples: int) -> str:
    """Names a tier's resamples: two tier scores with the same key have paired draws.

    ``sha256("<dataset_hash>|<scene ids>|<B>|<tile size>")``, first 16 hex digits.
    """
    text = f"{dataset_hash}|{','.join(scene_ids)}|{n_resamples}|{TILE_SIZE}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def score_tier(
    dataset: TierDataset,
    result: Result,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> TierScore:
    """Score every scene of a tier and average each term over the scenes; with
    ``n_resamples > 0`` also the block-bootstrap interval of every scene and of the tier.

    Scene *s* is resampled with :func:`~harness.uncertainty.resample_counts` seeded by
    ``resample_seed(dataset.content_hash, s)``; the tier's replicates are the mean of its
    scenes' (scenes resampled independently), the interval their percentile interval at
    ``confidence``. ``n_resamples=0`` skips the bootstrap (point scores only, as v1).

    Raises
    ------
    ValueError
        The dataset has no truth, or the result's scene ids differ from the dataset's, or
        ``n_resamples`` is negative.
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be ≥ 0; got {n_resamples}")
    if not dataset.has_truth:
        raise ValueError(f"the {dataset.tier} dataset has no truth; score against the organizer's copy")
    expected = dataset.scene_ids
    missing = [s for s in expected if s not in result.scenes]
    extra = sorted(set(result.scenes) - set(expected))
    if missing or extra:
        raise ValueError(f"result scenes must be exactly {expected}; missing {missing}, unknown {extra}")
    operator = dataset.operator()
    with_ci = n_resamples > 0
    scores = [
        score_scene(
            scene, result.scenes[scene.scene_id], operator=operator, ranges=dataset.ranges, keep_tile_stats=with_ci
        )
        for scene in dataset.scenes
    ]
    tier_draws = None
    tier_ci: tuple[float | None, float | None] = (None, None)
    if with_ci:
        per_scene = []
        for i, s in enumerate(scores):
            assert s.tile_stats is not None  # kept: keep_tile_stats=with_ci
            counts = resample_counts(
                s.tile_stats.n_tiles, n_resamples=n_resamples, seed=resample_seed(dataset.content_hash, s.scene_id)
            )
            draws = scene_draws(s.tile_stats, counts)
            lo, hi = percentile_interval(draws.score(dataset.tier), confidence=confidence)
            scores[i] = replace(s, ci_low=lo, ci_high=hi)
            per_scene.append(draws)
        tier_draws = mean_draws(per_scene)
        tier_ci = percentile_interval(tier_draws.score(dataset.tier), confidence=confidence)

    def mean(attr: str) -> float:
        return float(np.mean([getattr(s, attr) for s in scores]))

    return TierScore(
        tier=dataset.tier,
        scenes=scores,
        psnr=mean("psnr"),
        psnr_norm=mean("psnr_norm"),
        ssim=mean("ssim"),
        consistency=mean("consistency"),
        consistency_measured=mean("consistency_measured"),
        standard=mean("standard"),
        blind=mean("blind"),
        ci_low=tier_ci[0],
        ci_high=tier_ci[1],
        draws=tier_draws,
        resample_key=resample_key(dataset.content_hash, dataset.scene_ids, n_resamples=n_resamples) if with_ci else "",
        n_resamples=n_resamples,
        confidence=confidence,
    )


def overall_score(tier_scores: Mapping[str, float | None]) -> float | None:
    """Mean of the Public, Dev and Hidden tier scores; ``None`` unless all three are present.

    Other keys (the Standard track) are ignored; a ``None`` value counts as missing.

    Raises
    ------
    ValueError
        A present blind-tier score is not a finite number.
    """
    values = []
    for tier in BLIND_TIERS:
        value = tier_scores.get(tier)
        if value is None:
            return None
        if not math.isfinite(float(value)):
            raise ValueError(f"tier score for {tier!r} must be finite; got {value!r}")
        values.append(float(value))
    return sum(values) / len(values)


def overall_draws(tier_draws: Mapping[str, np.ndarray | None]) -> np.ndarray | None:
    """Replicates of :func:`overall_score`: the mean of the Public, Dev and Hidden tier score
    draws (each tier resampled independently); ``None`` unless all three are present with
    the same number of replicates."""
    arrays = []
    for tier in BLIND_TIERS:
        value = tier_draws.get(tier)
        if value is None:
            return None
        arrays.append(np.asarray(value, dtype=np.float64))
    if len({a.shape for a in arrays}) != 1:
        return None
    return (arrays[0] + arrays[1] + arrays[2]) / 3.0
