"""services/cli/plots.py: edx-arena plot maps|error|spectrum draw the server's pictures locally,
and refuse with a reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from services.cli.main import app
from services.cli.science import EXIT_INVALID_FILE

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    full, view, result = d / "full.h5", d / "view.h5", d / "result.h5"
    for args in (
        ["dataset", "build", "--tier", "public", "--seed", "8", "--size", "small", "--out", str(full)],
        ["dataset", "export", str(full), "--dev-view", "--out", str(view)],
        ["solve", str(view), "--out", str(result)],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    return full, view, result


def _png(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    return image


def test_truth_result_error_and_spectrum_pictures(files, tmp_path):
    full, view, result = files
    r = runner.invoke(app, ["plot", "maps", str(full), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["public-s0-maps.png", "public-s1-maps.png", "public-s2-maps.png"]
    assert str(tmp_path / "public-s0-maps.png") in r.output
    r = runner.invoke(
        app, ["plot", "maps", str(view), "--result", str(result), "--scene", "public-s1", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["plot", "error", str(full), "--result", str(result), "--scene", "public-s1", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plot", "spectrum", str(view), "--scene", "public-s2", "--log", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    truth, mine, _err = (_png(tmp_path / f"public-s1-{n}.png") for n in ("maps", "result-maps", "error"))
    assert not np.array_equal(truth, mine)  # the solver's answer is not the truth
    _png(tmp_path / "public-s2-spectrum.png")


def test_refusals_say_why(files, tmp_path):
    full, view, result = files
    r = runner.invoke(app, ["plot", "maps", str(view), "--out", str(tmp_path)])
    assert r.exit_code == EXIT_INVALID_FILE and "has no truth" in r.output
    r = runner.invoke(app, ["plot", "error", str(view), "--result", str(result), "--out", str(tmp_path)])
    assert r.exit_code == EXIT_INVALID_FILE and "cannot give an error map" in r.output
    r = runner.invoke(app, ["plot", "spectrum", str(full), "--scene", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no scene nope" in r.output and "public-s0" in r.output
    r = runner.invoke(app, ["plot", "maps", str(full), "--result", str(full), "--out", str(tmp_path)])
    assert r.exit_code == EXIT_INVALID_FILE  # a measurement is not a result file
    r = runner.invoke(app, ["plot", "maps", str(full), "--cmap", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown colour map 'nope'" in r.output
    assert not list(tmp_path.glob("*.png"))
