"""Pictures: element-map grids, error maps and spectra as PNG bytes (decoded and checked)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from harness.forward import ELEMENTS, LINES
from harness.plots import _line_labels, _line_marks, error_maps, lines_of, maps_png, mean_spectrum, spectrum_png
from harness.scenes import build_tier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return imread(io.BytesIO(png), format="png")


@pytest.fixture(scope="module")
def scene():
    return build_tier("public", seed=3, preset="small").scenes[0]


def test_maps_png_is_a_grid_of_the_maps(scene):
    png = maps_png(scene.x_true, ELEMENTS, title="public-s0 truth")
    image = _decode(png)
    height, width = image.shape[:2]
    assert width > height > 300  # 3 columns × 2 rows of square panels and a colour bar
    # Deterministic: no timestamp in the file, so the server can cache by content.
    assert maps_png(scene.x_true, ELEMENTS, title="public-s0 truth") == png
    assert b"Software" not in png and b"Creation Time" not in png
    # Different maps give a different picture; empty maps are drawn, not refused.
    assert maps_png(np.zeros_like(scene.x_true), ELEMENTS, title="public-s0 truth") != png


def test_maps_png_shows_nan_as_grey_not_an_error():
    maps = np.full((2, 8, 8), np.nan)
    maps[0, :4] = 0.5
    image = _decode(maps_png(maps, ["a", "b"], columns=2))
    # Some pixel carries the "bad" grey #9a9a9a.
    grey = np.all(np.abs(image[..., :3] - 0x9A / 255) < 2 / 255, axis=-1)
    assert grey.sum() > 100


@pytest.mark.parametrize(
    ("maps", "names", "kwargs", "message"),
    [
        (np.zeros((6, 4)), ELEMENTS, {}, "non-empty (E, H, W)"),
        (np.zeros((0, 4, 4)), (), {}, "non-empty (E, H, W)"),
        (np.zeros((2, 4, 4)), ("Si",), {}, "1 element names for 2 maps"),
        (np.zeros((1, 4, 4)), ("Si",), {"vmin": 1.0, "vmax": 0.0}, "finite vmin < vmax"),
        (np.zeros((1, 4, 4)), ("Si",), {"columns": 0}, "columns must be ≥ 1"),
        (np.zeros((1, 4, 4)), ("Si",), {"cmap": "no-such-map"}, "unknown colour map 'no-such-map'"),
    ],
)
def test_maps_png_rejects_bad_input(maps, names, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        maps_png(maps, names, **kwargs)


def test_error_maps_are_the_scored_absolute_error(scene):
    x = scene.x_true
    x_hat = x.copy()
    x_hat[0, 5, 5] = np.nan  # sanitised to 0, as the scorer does
    x_hat[1, 6, 6] = 7.0  # clipped to 1
    x_hat[2] += 0.25
    err = error_maps(x_hat, x)
    assert err.shape == x.shape and err.dtype == np.float64
    assert err[0, 5, 5] == pytest.approx(x[0, 5, 5])
    assert err[1, 6, 6] == pytest.approx(1 - x[1, 6, 6])
    inside = x[2] + 0.25 <= 1
    assert np.allclose(err[2][inside], 0.25)
    assert np.count_nonzero(err[3:]) == 0
    with pytest.raises(ValueError, match="same shape"):
        error_maps(x[:2], x)


def test_mean_spectrum_is_the_pixel_mean(scene):
    spectrum = mean_spectrum(scene.y)
    assert spectrum.shape == (scene.y.shape[2],) and spectrum.dtype == np.float64
    assert spectrum[17] == pytest.approx(float(scene.y[:, :, 17].astype(np.float64).mean()))
    with pytest.raises(ValueError, match="non-empty"):
        mean_spectrum(scene.y[0])


def test_spectrum_png_marks_the_lines(scene):
    from harness.forward import ForwardModel

    energy = ForwardModel("small").energy_keV
    spectrum = mean_spectrum(scene.y)
    png = spectrum_png(energy, spectrum, lines_of(LINES), title="public-s0")
    image = _decode(png)
    assert image.shape[1] > image.shape[0]
    # Lines are drawn: the same spectrum without lines is a different picture.
    assert spectrum_png(energy, spectrum, {}, title="public-s0") != png
    assert _decode(spectrum_png(energy, spectrum, {"Si": 1.7397}, log_scale=True)).size


def test_nearby_labels_are_stacked_and_an_elements_close_lines_share_one():
    marks = _line_marks(lines_of(LINES))
    labels = _line_labels(marks, keV_per_char=0.15)
    texts = [text for _, text, _, _ in labels]
    assert "Si Kα" in texts and "W Mα" in texts and "Mo Kα" in texts
    assert "Ba Lβ1" not in texts  # 0.36 keV from Ba Lα: one label for the cluster
    by_text = {text: (kev, level) for _, text, kev, level in labels}
    assert by_text["Si Kα"][1] != by_text["W Mα"][1]  # 0.036 keV apart: different levels


@pytest.mark.parametrize(
    ("energy", "counts", "lines", "message"),
    [
        (np.arange(5.0), np.ones(4), {}, "same length"),
        (np.array([1.0, 1.0, 2.0]), np.ones(3), {}, "strictly increasing"),
        (np.arange(3.0), np.array([1.0, np.inf, 0.0]), {}, "finite"),
        (np.arange(3.0), np.ones(3), {"Si": float("nan")}, "energies must be finite keV"),
    ],
)
def test_spectrum_png_rejects_bad_input(energy, counts, lines, message):
    with pytest.raises(ValueError, match=message):
        spectrum_png(energy, counts, lines)
