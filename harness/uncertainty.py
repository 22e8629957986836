"""Uncertainty of scores: a block bootstrap over spatial tiles (scorer ``edx-score-v2``).

With three scenes a tier, two methods a few thousandths apart are usually
indistinguishable. The score of a scene is a function of sums over its pixels, so its
sampling variability can be estimated by resampling *blocks* of pixels: neighbouring pixels
are correlated (smooth phantoms, a 7 × 7 SSIM window, detector blur), blocks much larger
than that correlation length are treated as exchangeable (Künsch 1989, DOI:10.1214/aos/1176347265;
Politis & Romano 1994 for the paired use).

**Tiles.** A scene's (H, W) grid is cut into square tiles of :data:`TILE_SIZE` = 16 pixels,
row-major (tile ``k = (i // 16) * ceil(W / 16) + j // 16``); edge tiles are smaller when H
or W is not a multiple of 16. Tile *k* holds the sufficient statistics of every score term:

====================  ===========================================================================
``n_image[k]``        pixels of *k* in the scored (cropped, rows ≥ ``image_row_offset``) region
``sse[k]``            ``Σ_e Σ_{p∈k} (x_e,p − x̂_e,p)²`` over the cropped region (all elements)
``n_ssim[k]``         pixels of *k* where the SSIM map is averaged (the cropped map less a
                      ``ssim_pad`` border, as scikit-image does)
``ssim_sum[k, e]``    ``Σ_{p∈k} S_e(p)``: element *e*'s per-pixel SSIM map summed over those pixels
``residual_sq[k]``    ``Σ_{p∈k} Σ_c (ȳ − H(θ̂) x̂)²_{p,c}`` (counts², whole scene)
``reference_sq[k]``   ``Σ_{p∈k} Σ_c ȳ²_{p,c}``
====================  ===========================================================================

**Resample.** A resample draws T tile indices with replacement (T = number of tiles); with
``c_k`` the number of times tile *k* was drawn, every term is recomputed from weighted sums:

.. math::

    \\mathrm{MSE}^* = \\frac{\\sum_k c_k\\, \\mathrm{sse}_k}{E \\sum_k c_k\\, n^{\\mathrm{img}}_k}, \\quad
    \\mathrm{SSIM}^* = \\frac{1}{E} \\sum_e \\frac{\\sum_k c_k\\, s_{k,e}}{\\sum_k c_k\\, n^{\\mathrm{ssim}}_k}, \\quad
    \\mathrm{cons}^* = \\operatorname{clip}\\Big(1 - \\sqrt{\\tfrac{\\sum_k c_k r_k}{\\sum_k c_k q_k}}, 0, 1\\Big)

then ``PSNR* = min(100, 10 log10(1 / MSE*))`` dB, ``PSNR_norm* = clip((PSNR* − 15)/30, 0, 1)``,
``blind* = 0.4 PSNR_norm* + 0.4 SSIM* + 0.2 cons*`` and ``standard* = 0.5 PSNR_norm* + 0.5 SSIM*``:
exactly the formulas of design §6, so ``c_k = 1`` for every tile gives the point score back.
The SSIM map is computed once on the whole image (windows straddle tile borders); only its
*average* is resampled, which is what makes B resamples cost one matrix product
``C (B × T) @ stats (T × K)`` instead of B rescoring runs.

**Seeds and pairing.** The B × T index matrix of a scene comes from
``numpy.random.default_rng(resample_seed(dataset_hash, scene_id))``, so every entry scored
against the same dataset resamples the same tiles: two entries' draws are *paired*, and
``P(A > B) = mean(a* > b*) + ½ mean(a* = b*)`` is the paired bootstrap probability that A
beats B. A tier's draws are the mean of its scenes' draws (scenes resampled independently);
the overall draws are the mean of the three tiers' draws.

**Interval.** The percentile interval: the (1 − γ)/2 and (1 + γ)/2 quantiles of the B draws,
γ = :data:`CONFIDENCE` = 0.95 (numpy's linear interpolation). It need not be symmetric around
the point score.

**What it does not cover.** The interval is conditional on the tier's scenes and on the one
noise draw of each: it says how much the score depends on which parts of these scenes were
measured, not what other phantoms or another exposure would give, so it is a lower bound on
the uncertainty of a method's merit. Tiles are treated as exchangeable, which the
non-stationary phantoms only approximate; with few tiles (the 32 × 32 "small" preset has 4)
the interval is rough. With B = 1000 the Monte-Carlo error of the 2.5 % / 97.5 % quantiles is
a few per cent of the interval's width.

All functions are pure (arrays in, arrays out) and deterministic for a fixed seed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.terms import blind, psnr_from_mse, psnr_norm, standard
from harness.tiers import tier_rules

__all__ = [
    "CONFIDENCE",
    "N_RESAMPLES",
    "TILE_SIZE",
    "Draws",
    "TileStats",
    "decode_draws",
    "encode_draws",
    "groups_from_links",
    "inseparable",
    "mean_draws",
    "percentile_interval",
    "prob_greater",
    "resample_counts",
    "resample_seed",
    "scene_draws",
    "tie_groups",
    "tile_labels",
    "tile_stats",
]

#: Side of a bootstrap tile (pixels).
TILE_SIZE = 16
#: Bootstrap resamples per scene.
N_RESAMPLES = 1000
#: Coverage of the reported interval and the level at which ranks are separated.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class TileStats:
    """Per-tile sufficient statistics of one scene (see the module docstring).

    Arrays have one row per tile (T rows); ``ssim_sum`` is (T, E). ``grid`` is the scene's
    (H, W) in pixels. Counts are pixels (per element for ``n_image``); ``sse`` and ``ssim_sum``
    are dimensionless (maps are fractions in [0, 1]); ``residual_sq`` and ``reference_sq``
    are counts².
    """

    tile_size: int
    grid: tuple[int, int]
    n_image: np.ndarray
    sse: np.ndarray
    n_ssim: np.ndarray
    ssim_sum: np.ndarray
    residual_sq: np.ndarray
    reference_sq: np.ndarray

    @property
    def n_tiles(self) -> int:
        return int(self.sse.shape[0])

    @property
    def n_elements(self) -> int:
        return int(self.ssim_sum.shape[1])

    def as_json(self) -> dict:
        """JSON-ready dict (lists of floats; Python's float repr round-trips exactly)."""
        return {
            "tile_size": int(self.tile_size),
            "grid": [int(g) for g in self.grid],
            "n_image": [int(v) for v in self.n_image],
            "sse": [float(v) for v in self.sse],
            "n_ssim": [int(v) for v in self.n_ssim],
            "ssim_sum": [[float(v) for v in row] for row in self.ssim_sum],
            "residual_sq": [float(v) for v in self.residual_sq],
            "reference_sq": [float(v) for v in self.reference_sq],
        }

    @classmethod
    def from_json(cls, data: dict) -> TileStats:
        """Inverse of :meth:`as_json`; raises ``ValueError`` naming a missing or mis-sized field."""
        try:
            grid = tuple(int(g) for g in data["grid"])
            stats = cls(
                tile_size=int(data["tile_size"]),
                grid=(grid[0], grid[1]),
                n_image=np.asarray(data["n_image"], dtype=np.float64),
                sse=np.asarray(data["sse"], dtype=np.float64),
                n_ssim=np.asarray(data["n_ssim"], dtype=np.float64),
                ssim_sum=np.asarray(data["ssim_sum"], dtype=np.float64),
                residual_sq=np.asarray(data["residual_sq"], dtype=np.float64),
                reference_sq=np.asarray(data["reference_sq"], dtype=np.float64),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"tile statistics are incomplete or malformed: {exc!r}") from None
        h, w = stats.grid
        if h < 1 or w < 1 or stats.tile_size < 1:
            raise ValueError(f"tile statistics need a positive grid and tile size; got {stats.grid}, {stats.tile_size}")
        t = -(-h // stats.tile_size) * -(-w // stats.tile_size)
        for name in ("n_image", "sse", "n_ssim", "residual_sq", "reference_sq"):
            if getattr(stats, name).shape != (t,):
                raise ValueError(
                    f"tile statistics field {name!r} must have {t} values; got shape {getattr(stats, name).shape}"
                )
        if stats.ssim_sum.ndim != 2 or stats.ssim_sum.shape[0] != t:
            raise ValueError(f"tile statistics field 'ssim_sum' must be ({t}, E); got shape {stats.ssim_sum.shape}")
        return stats

    def _matrix(self) -> np.ndarray:
        """(T, 5 + E) columns: n_image, sse, n_ssim, residual_sq, reference_sq, ssim_sum[:, e]."""
        return np.column_stack(
            [self.n_image, self.sse, self.n_ssim, self.residual_sq, self.reference_sq, self.ssim_sum]
        ).astype(np.float64, copy=False)


@dataclass(frozen=True)
class Draws:
    """Bootstrap replicates of every score term, each an array of shape (B,)."""

    psnr: np.ndarray
    psnr_norm: np.ndarray
    ssim: np.ndarray
    consistency: np.ndarray
    standard: np.ndarray
    blind: np.ndarray

    def score(self, tier: str) -> np.ndarray:
        """The leaderboard score's draws: ``standard`` on the Standard track, else ``blind``."""
        return self.standard if tier_rules(tier).score == "standard" else self.blind


def tile_labels(height: int, width: int, *, tile_size: int = TILE_SIZE) -> np.ndarray:
    """(H, W) int64 array: the row-major index of the tile each pixel belongs to.

    ``label[i, j] = (i // s) · ceil(W / s) + j // s`` with ``s = tile_size``.
    """
    if height < 1 or width < 1 or tile_size < 1:
        raise ValueError(f"tile_labels needs a positive grid and tile size; got {height}×{width}, tile {tile_size}")
    cols = -(-width // tile_size)
    rows = np.arange(height) // tile_size
    return (rows[:, None] * cols + (np.arange(width) // tile_size)[None, :]).astype(np.int64)


def tile_stats(
    sq_error: np.ndarray,
    ssim_map: np.ndarray,
    residual_sq: np.ndarray,
    reference_sq: np.ndarray,
    *,
    image_row_offset: int,
    ssim_pad: int,
    tile_size: int = TILE_SIZE,
) -> TileStats:
    """Aggregate per-pixel score ingredients into per-tile sums.

    Parameters
    ----------
    sq_error : ndarray
        (H − image_row_offset, W): ``Σ_e (x_e − x̂_e)²`` per pixel of the scored region.
    ssim_map : ndarray
        (E, H − image_row_offset, W): the per-pixel SSIM map of each element on the scored
        region (scikit-image ``structural_similarity(..., full=True)``).
    residual_sq, reference_sq : ndarray
        (H, W): ``Σ_c (ȳ − ŷ)²`` and ``Σ_c ȳ²`` per pixel of the whole scene (counts²).
    image_row_offset : int
        Rows at the top of the scene excluded from PSNR and SSIM (the calibration strip).
    ssim_pad : int
        Border of the SSIM map left out of its mean (``(win_size − 1) // 2``).
    tile_size : int
        Tile side in pixels.

    Returns
    -------
    TileStats
        Tiles of the whole (H, W) grid; the scored-region sums use each pixel's scene position.
    """
    residual_sq = np.asarray(residual_sq, dtype=np.float64)
    reference_sq = np.asarray(reference_sq, dtype=np.float64)
    sq_error = np.asarray(sq_error, dtype=np.float64)
    ssim_map = np.asarray(ssim_map, dtype=np.float64)
    if residual_sq.ndim != 2 or reference_sq.shape != residual_sq.shape:
        raise ValueError(
            f"residual_sq and reference_sq must be the same (H, W); got {residual_sq.shape} and {reference_sq.shape}"
        )
    h, w = residual_sq.shape
    cropped = (h - image_row_offset, w)
    if sq_error.shape != cropped:
        raise ValueError(f"sq_error must be (H − {image_row_offset}, W) = {cropped}; got {sq_error.shape}")
    if ssim_map.ndim != 3 or ssim_map.shape[1:] != cropped:
        raise ValueError(f"ssim_map must be (E, {cropped[0]}, {cropped[1]}); got {ssim_map.shape}")
    if min(cropped) <= 2 * ssim_pad:
        raise ValueError(f"the scored region {cropped} is too small for an SSIM border of {ssim_pad}")

    labels = tile_labels(h, w, tile_size=tile_size)
    t = int(labels[-1, -1]) + 1
    image_labels = labels[image_row_offset:, :]
    inner = image_labels[ssim_pad : -ssim_pad or None, ssim_pad : -ssim_pad or None].ravel()

    def per_tile(lab: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(lab, weights=None if values is None else values.ravel(), minlength=t).astype(np.float64)

    ssim_inner = ssim_map[:, ssim_pad : -ssim_pad or None, ssim_pad : -ssim_pad or None]
    return TileStats(
        tile_size=tile_size,
        grid=(h, w),
        n_image=per_tile(image_labels.ravel()),
        sse=per_tile(image_labels.ravel(), sq_error),
        n_ssim=per_tile(inner),
        ssim_sum=np.stack([per_tile(inner, ssim_inner[e]) for e in range(ssim_map.shape[0])], axis=1),
        residual_sq=per_tile(labels.ravel(), residual_sq),
        reference_sq=per_tile(labels.ravel(), reference_sq),
    )


def resample_seed(dataset_hash: str, scene_id: str) -> int:
    """The 64-bit seed of a scene's resamples: the first 8 bytes (little-endian) of
    ``sha256("edx-bootstrap-v1\\0" + dataset_hash + "\\0" + scene_id)``.

    Every entry scored against the same dataset draws the same tiles, which pairs them.
    """
    digest = hashlib.sha256(f"edx-bootstrap-v1\0{dataset_hash}\0{scene_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resample_counts(n_tiles: int, *, n_resamples: int = N_RESAMPLES, seed: int) -> np.ndarray:
    """(B, T) float64 matrix ``C``: ``C[b, k]`` = times tile *k* is drawn in resample *b*.

    Each row draws T indices uniformly with replacement from
    ``numpy.random.default_rng(seed).integers(0, T, size=(B, T))``; rows sum to T.
    """
    if n_tiles < 1 or n_resamples < 1:
        raise ValueError(f"resample_counts needs n_tiles ≥ 1 and n_resamples ≥ 1; got {n_tiles}, {n_resamples}")
    idx = np.random.default_rng(seed).integers(0, n_tiles, size=(n_resamples, n_tiles))
    flat = idx + (np.arange(n_resamples) * n_tiles)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_tiles).reshape(n_resamples, n_tiles).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray, fallback: float) -> np.ndarray:
    # A resample made only of tiles without scored pixels has no value of its own; it
    # keeps the full-scene value rather than a NaN (only possible on tiny grids).
    out = np.full(num.shape, fallback, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scene_draws(stats: TileStats, counts: np.ndarray) -> Draws:
    """Bootstrap replicates of one scene's score terms (formulas in the module docstring).

    Parameters
    ----------
    stats : TileStats
        The scene's per-tile sums (T tiles, E elements).
    counts : ndarray
        (B, T) tile multiplicities, e.g. from :func:`resample_counts`; an all-ones row
        reproduces the point score.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != stats.n_tiles:
        raise ValueError(f"counts must be (B, {stats.n_tiles}); got shape {counts.shape}")
    full = stats._matrix()
    sums = counts @ full  # (B, 5 + E): the whole bootstrap in one product
    total = full.sum(axis=0)
    e = stats.n_elements
    n_img, sse, n_ssim, res, ref = (sums[:, i] for i in range(5))
    mse = _ratio(sse, e * n_img, total[1] / (e * total[0]) if total[0] > 0 else 0.0)
    psnr = psnr_from_mse(mse)
    p_norm = psnr_norm(psnr)
    ssim_fallback = total[5:] / total[2] if total[2] > 0 else np.zeros(e)
    ssim = np.mean(
        np.stack([_ratio(sums[:, 5 + j], n_ssim, float(ssim_fallback[j])) for j in range(e)], axis=1), axis=1
    )
    # ‖ȳ‖ = 0: a zero prediction is perfectly consistent, anything else is not (as the scorer).
    ratio = _ratio(res, ref, 0.0)
    cons = np.where(ref > 0, np.clip(1.0 - np.sqrt(ratio), 0.0, 1.0), np.where(res > 0, 0.0, 1.0))
    return Draws(
        psnr=psnr,
        psnr_norm=p_norm,
        ssim=ssim,
        consistency=cons,
        standard=standard(p_norm, ssim),
        blind=blind(p_norm, ssim, cons),
    )


def mean_draws(draws: Sequence[Draws]) -> Draws:
    """Term-by-term mean of several scenes' (or tiers') draws: the tier (overall) replicates."""
    if not draws:
        raise ValueError("mean_draws needs at least one set of draws")
    fields = ("psnr", "psnr_norm", "ssim", "consistency", "standard", "blind")
    return Draws(**{f: np.mean([getattr(d, f) for d in draws], axis=0) for f in fields})


def percentile_interval(draws: np.ndarray, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval ``(q_{(1−γ)/2}, q_{(1+γ)/2})`` of ``draws`` (B,)."""
    d = np.asarray(draws, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"percentile_interval needs a non-empty finite 1-D array; got shape {d.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.percentile(d, [tail, 100.0 - tail])
    return float(lo), float(hi)


def prob_greater(draws_a: np.ndarray, draws_b: np.ndarray) -> float:
    """Paired bootstrap probability that A beats B: ``mean(a* > b*) + ½ mean(a* = b*)``.

    ``draws_a`` and ``draws_b`` must come from the same resamples (same seeds), element by
    element; identical entries give exactly ½.
    """
    a = np.asarray(draws_a, dtype=np.float64)
    b = np.asarray(draws_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired draws must be non-empty 1-D arrays of one shape; got {a.shape} and {b.shape}")
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


def tie_groups(draws: Sequence[np.ndarray | None], *, confidence: float = CONFIDENCE) -> list[int | None]:
    """Groups of adjacent entries the paired bootstrap cannot separate.

    ``draws`` are the entries' paired score draws in rank order (best first); ``None`` marks
    an entry without draws, which is never tied. Entry *i* joins entry *i − 1*'s group when
    ``(1 − γ)/2 ≤ P(entry i−1 beats entry i) ≤ (1 + γ)/2``; ties chain, so a group may hold
    entries whose ends alone would separate.

    Returns
    -------
    list
        Per entry, the index of its group's first entry, or ``None`` when it is tied with
        neither neighbour.
    """
    if not draws:
        return []
    return groups_from_links([inseparable(draws[i - 1], draws[i], confidence=confidence) for i in range(1, len(draws))])


def inseparable(draws_a: np.ndarray | None, draws_b: np.ndarray | None, *, confidence: float = CONFIDENCE) -> bool:
    """True when the paired bootstrap cannot separate A and B at level γ:
    ``(1 − γ)/2 ≤ P(A beats B) ≤ (1 + γ)/2`` (equivalently, the percentile interval of the
    paired difference a* − b* contains 0). False when either has no draws or they differ in
    length (not paired)."""
    if draws_a is None or draws_b is None or np.shape(draws_a) != np.shape(draws_b):
        return False
    p = prob_greater(draws_a, draws_b)
    return (1.0 - confidence) / 2.0 <= p <= (1.0 + confidence) / 2.0


def groups_from_links(links: Sequence[bool]) -> list[int | None]:
    """Tie groups from the links between neighbours: ``links[i]`` says entries *i* and
    *i + 1* are tied (n − 1 links for n ≥ 1 entries). Per entry, the index of the first entry
    of its chain of links, or ``None`` when neither of its links holds."""
    n = len(links) + 1
    starts = list(range(n))
    tied = [False] * n
    for i, link in enumerate(links):
        if link:
            starts[i + 1] = starts[i]
            tied[i] = tied[i + 1] = True
    return [starts[i] if tied[i] else None for i in range(n)]


def encode_draws(draws: np.ndarray) -> str:
    """Base64 of the draws as little-endian float64: exact, and ~8 kB JSON for B = 1000."""
    return base64.b64encode(np.ascontiguousarray(draws, dtype="<f8").tobytes()).decode("ascii")


def decode_draws(text: str) -> np.ndarray:
    """Inverse of :func:`encode_draws`; raises ``ValueError`` on a malformed string."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"bootstrap draws are not valid base64: {exc}") from None
    if len(raw) % 8:
        raise ValueError(f"bootstrap draws must be float64 values; got {len(raw)} bytes")
    draws = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(draws)):
        raise ValueError("bootstrap draws must be finite")
    return draws
