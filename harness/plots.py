"""Pictures of scenes and answers as PNG bytes: element-map grids and a scene's mean spectrum.

Pure functions: arrays in, PNG bytes out, no file I/O and no global plotting state (each call
builds its own matplotlib ``Figure`` on the Agg canvas, so concurrent calls from server threads
never share a pyplot figure). The PNGs carry no timestamp or software tag, so the same arrays
give the same bytes with the same matplotlib (the server caches them by content).

* :func:`maps_png` — one panel per element, fractions on a fixed colour scale (0 to 1 by
  default, so two pictures of the same scene compare by eye).
* :func:`error_maps` — ``|x̂ − x|`` per pixel after the scorer's own sanitising of ``x̂``
  (NaN/inf → 0, clipped to [0, 1]): the error the PSNR is computed from.
* :func:`mean_spectrum` — the mean counts per channel over a scene's pixels.
* :func:`spectrum_png` — a spectrum with the characteristic lines of each element marked.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["error_maps", "lines_of", "maps_png", "mean_spectrum", "spectrum_png"]

#: One colour per element line set (matplotlib's tab10), in the order the elements are given.
_LINE_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
_DPI = 100
#: Spectrum label layout: axes width in pixels, pixels per label character, band height per level.
_AXES_PX = 780
_CHAR_PX = 6.0
_LEVEL_HEIGHT = 0.075
#: Lines of one element closer than this (keV) share one label ("Ba Lα" for Lα, Lβ1, Lβ2).
_CLUSTER_KEV = 0.4
# No Software/Creation Time chunks: identical arrays give identical bytes.
_PNG_METADATA = {"Software": None}


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return out.getvalue()


def maps_png(
    maps: np.ndarray,
    element_names: Sequence[str],
    *,
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    colorbar_label: str = "fraction",
    columns: int = 3,
) -> bytes:
    """A grid of element maps, one panel per element, as PNG bytes.

    Parameters
    ----------
    maps : ndarray, shape (E, H, W)
        Element fractions (dimensionless, usually in [0, 1]). NaN/inf are drawn as the
        colour map's "bad" colour (grey), not hidden.
    element_names : sequence of str, length E
        Panel titles, in the order of ``maps``.
    title : str
        Figure title (plain text; nothing is interpreted as markup).
    vmin, vmax : float
        Fixed colour scale shared by all panels (``vmin < vmax``).
    columns : int
        Panels per row (≥ 1).

    Raises
    ------
    ValueError
        If ``maps`` is not 3-D, is empty, or does not match ``element_names``, or the colour
        scale or column count is invalid.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or min(maps.shape) == 0:
        raise ValueError(f"maps must be a non-empty (E, H, W) array; got shape {maps.shape}")
    if len(element_names) != maps.shape[0]:
        raise ValueError(f"{len(element_names)} element names for {maps.shape[0]} maps; give one name per map")
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"the colour scale needs finite vmin < vmax; got vmin={vmin}, vmax={vmax}")
    if columns < 1:
        raise ValueError(f"columns must be ≥ 1; got {columns}")
    n = maps.shape[0]
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    height, width = maps.shape[1:]
    panel = 2.6
    aspect = height / width
    fig = _figure(panel * cols + 0.9, panel * aspect * rows + (0.45 if title else 0.1) + 0.35 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    colormap = _colormap(cmap)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        data = np.ma.masked_invalid(maps[i].astype(np.float64, copy=False))
        image = ax.imshow(data, cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(str(element_names[i]), fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    colorbar = fig.colorbar(image, ax=axes, shrink=0.85, pad=0.02)
    colorbar.set_label(colorbar_label)
    if title:
        fig.suptitle(title, fontsize=12)
    return _png(fig)


def _colormap(name: str):
    from matplotlib import colormaps

    if name not in colormaps:
        raise ValueError(f"unknown colour map {name!r}; use a matplotlib name such as 'viridis' or 'magma'")
    return colormaps[name].with_extremes(bad="#9a9a9a")


def error_maps(x_hat: np.ndarray, x_true: np.ndarray) -> np.ndarray:
    """Absolute error per element and pixel, ``|sanitise(x̂) − x|`` (dimensionless, in [0, 1]).

    ``sanitise`` is the scorer's (:func:`harness.scoring.sanitize_maps`): NaN/±inf → 0, then
    clip to [0, 1]. The squared mean of this array over the cropped scene is the MSE behind
    PSNR. Shapes must match, (E, H, W).
    """
    from harness.scoring import sanitize_maps

    x_hat = np.asarray(x_hat)
    x_true = np.asarray(x_true, dtype=np.float64)
    if x_hat.shape != x_true.shape:
        raise ValueError(f"x_hat and x_true must have the same shape; got {x_hat.shape} and {x_true.shape}")
    clean, _ = sanitize_maps(x_hat)
    return np.abs(clean - x_true)


def mean_spectrum(y: np.ndarray) -> np.ndarray:
    """Mean counts per channel over all pixels, ``ȳ_c = (1 / HW) Σ_p y(p, c)``, shape (C,).

    ``y`` is the (H, W, C) count cube; accumulated in float64.
    """
    y = np.asarray(y)
    if y.ndim != 3 or min(y.shape) == 0:
        raise ValueError(f"y must be a non-empty (H, W, C) cube; got shape {y.shape}")
    return y.reshape(-1, y.shape[2]).mean(axis=0, dtype=np.float64)


def lines_of(table: Mapping[str, Sequence[tuple]]) -> dict[str, list[tuple[str, float]]]:
    """``{element: [(line name, keV), ...]}`` from a line table such as
    :data:`harness.forward.LINES` (rows ``(name, keV, weight)``; the weight is dropped)."""
    return {element: [(str(row[0]), float(row[1])) for row in rows] for element, rows in table.items()}


def spectrum_png(
    energy_keV: np.ndarray,
    counts: np.ndarray,
    lines: Mapping[str, float | Sequence[tuple[str, float]]],
    *,
    title: str = "",
    log_scale: bool = False,
) -> bytes:
    """A spectrum (counts against energy) with element lines marked, as PNG bytes.

    Parameters
    ----------
    energy_keV : ndarray, shape (C,)
        Channel centres (keV), increasing.
    counts : ndarray, shape (C,)
        Counts per channel (e.g. :func:`mean_spectrum`); finite, ≥ 0 if ``log_scale``.
    lines : mapping
        ``{element: keV}`` or ``{element: [(line name, keV), ...]}``: each line is drawn as a
        dashed vertical line in the element's colour; lines outside the energy axis are left
        out. Labels name the element (and the line when given).
    log_scale : bool
        Logarithmic counts axis (zeros are clipped to the smallest positive count).

    Raises
    ------
    ValueError
        On mismatched or non-increasing axes, non-finite counts, or a line energy that is not
        a finite number.
    """
    energy = np.asarray(energy_keV, dtype=np.float64)
    values = np.asarray(counts, dtype=np.float64)
    if energy.ndim != 1 or energy.size < 2 or values.shape != energy.shape:
        raise ValueError(
            f"energy_keV and counts must be 1-D arrays of the same length ≥ 2; got {energy.shape} and {values.shape}"
        )
    if not np.all(np.diff(energy) > 0):
        raise ValueError("energy_keV must be strictly increasing")
    if not np.all(np.isfinite(values)):
        raise ValueError("counts must be finite")
    marks = [m for m in _line_marks(lines) if energy[0] <= m[1][2] <= energy[-1]]
    labels = _line_labels(marks, keV_per_char=_CHAR_PX * float(energy[-1] - energy[0]) / _AXES_PX)
    levels = 1 + max((level for *_, level in labels), default=-1)
    # The labels sit in a band above the data: the top ``band`` of the axes height.
    band = 0.03 + _LEVEL_HEIGHT * levels
    fig = _figure(9.0, 4.2)
    ax = fig.subplots()
    ax.plot(energy, values, color="#222222", linewidth=1.0)
    peak = float(values.max()) if values.max() > 0 else 1.0
    if log_scale:
        positive = values[values > 0]
        floor = float(positive.min()) if positive.size else 1.0
        peak = max(peak, floor * 10)
        ax.set_yscale("log")
        ax.set_ylim(floor, floor * (peak / floor) ** (1 / (1 - band)))
    else:
        ax.set_ylim(0, peak * 1.02 / (1 - band))
    ax.set_xlim(float(energy[0]), float(energy[-1]))
    seen: set[str] = set()
    for colour, (element, _name, kev) in marks:
        ax.axvline(
            kev, color=colour, linestyle="--", linewidth=0.9, alpha=0.75, label=element if element not in seen else None
        )
        seen.add(element)
    for colour, text, kev, level in labels:
        ax.text(
            kev,
            1 - 0.02 - _LEVEL_HEIGHT * level,
            text,
            transform=ax.get_xaxis_transform(),
            ha="left",
            va="top",
            fontsize=8,
            color=colour,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85},
        )
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("mean counts per channel")
    if seen:
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.13), fontsize=8, ncols=min(len(seen), 10), frameon=False)
    if title:
        ax.set_title(title)
    return _png(fig)


def _line_marks(lines: Mapping[str, float | Sequence[tuple[str, float]]]) -> list[tuple[str, tuple[str, str, float]]]:
    marks = []
    for i, (element, spec) in enumerate(lines.items()):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        rows = [("", spec)] if isinstance(spec, (int, float, np.floating)) else spec
        for row in rows:
            name, kev = row[0], row[1]
            kev = float(kev)
            if not math.isfinite(kev):
                raise ValueError(f"line {element} {name} has energy {kev}; energies must be finite keV")
            marks.append((colour, (str(element), str(name), kev)))
    return marks


def _pretty(line: str) -> str:
    """Siegbahn names with Greek letters: ``Ka`` → ``Kα``, ``Lb1`` → ``Lβ1``."""
    if len(line) >= 2 and line[1] in "abg":
        return line[0] + {"a": "α", "b": "β", "g": "γ"}[line[1]] + line[2:]
    return line


def _line_labels(marks, *, keV_per_char: float) -> list[tuple[str, str, float, int]]:
    """One label per cluster of an element's nearby lines, each on the lowest band level where
    it does not overlap a label to its left: ``(colour, text, keV, level)``."""
    clusters: list[tuple[str, str, float]] = []
    last: dict[str, float] = {}
    for colour, (element, name, kev) in sorted(marks, key=lambda m: (m[1][0], m[1][2])):
        if element in last and kev - last[element] < _CLUSTER_KEV:
            last[element] = kev
            continue
        last[element] = kev
        clusters.append((colour, f"{element} {_pretty(name)}".strip(), kev))
    placed: list[tuple[str, str, float, int]] = []
    ends: list[float] = []  # right end (keV) of the last label on each level
    for colour, text, kev in sorted(clusters, key=lambda c: c[2]):
        level = next((i for i, end in enumerate(ends) if kev > end), len(ends))
        if level == len(ends):
            ends.append(0.0)
        ends[level] = kev + (len(text) + 1) * keV_per_char
        placed.append((colour, text, kev, level))
    return placed
