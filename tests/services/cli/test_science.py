"""The offline science commands, run through typer's runner on real files."""

import json

import h5py
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.cli.science import EXIT_INVALID_FILE

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    full, view, result = d / "full.h5", d / "view.h5", d / "result.h5"
    r = runner.invoke(app, ["dataset", "build", "--tier", "dev", "--seed", "5", "--size", "small", "--out", str(full)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["dataset", "export", str(full), "--dev-view", "--out", str(view)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["solve", str(view), "--out", str(result)])
    assert r.exit_code == 0, r.output
    return full, view, result


def test_build_export_solve_score(files):
    full, view, result = files
    with h5py.File(view) as f:
        assert "x_true" not in f["scenes/dev-s0"] and "seed" not in f.attrs
    r = runner.invoke(app, ["score", "--dataset", str(full), "--result", str(result), "--json"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)
    assert scores["tier"] == "dev" and len(scores["scenes"]) == 3
    assert 0 < scores["blind"] < 1 and scores["scorer_version"] == "edx-score-v2"


def test_invalid_result_exits_3_with_the_reason(files, tmp_path):
    full, _, _ = files
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    r = runner.invoke(app, ["score", "--dataset", str(full), "--result", str(bad)])
    assert r.exit_code == EXIT_INVALID_FILE
    assert "not an HDF5 file" in r.output


def test_scoring_needs_truth(files):
    _, view, result = files
    r = runner.invoke(app, ["score", "--dataset", str(view), "--result", str(result)])
    assert r.exit_code == 2 and "has no truth" in r.output


def test_export_needs_exactly_one_view(files, tmp_path):
    full, _, _ = files
    r = runner.invoke(app, ["dataset", "export", str(full), "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "exactly one of --public-view or --dev-view" in r.output


def test_unknown_solver(files, tmp_path):
    _, view, _ = files
    r = runner.invoke(app, ["solve", str(view), "--out", str(tmp_path / "r.h5"), "--solver", "magic"])
    assert r.exit_code == 2 and "unknown solver 'magic'" in r.output


def test_import_own_truth_maps(files, tmp_path):
    from harness.formats import read_measurement
    from harness.scenes import build_tier

    maps = tmp_path / "maps.h5"
    x = build_tier("public", seed=9, preset="small").scenes[0].x_true
    with h5py.File(maps, "w") as f:
        f["elements"] = ["Si", "S", "Ti", "Mo", "Ba", "W"]
        f["scenes/grain"] = x
        f["scenes/grain"].attrs["note"] = "x_true is read from /scenes/<id>/x_true"
    # /scenes/grain must be a group holding x_true: the importer says so
    r = runner.invoke(
        app, ["dataset", "import", str(maps), "--tier", "dev", "--size", "small", "--out", str(tmp_path / "o.h5")]
    )
    assert r.exit_code == EXIT_INVALID_FILE and "/scenes/grain" in r.output
    with h5py.File(maps, "w") as f:
        f["elements"] = ["Si", "S", "Ti", "Mo", "Ba", "W"]
        f["scenes/grain/x_true"] = x
    out = tmp_path / "own.h5"
    r = runner.invoke(
        app, ["dataset", "import", str(maps), "--tier", "dev", "--size", "small", "--seed", "4", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    ds = read_measurement(out)
    assert ds.scene_ids == ["grain"] and ds.has_truth
    assert abs(ds.scenes[0].x_true[:, 4:] - x[:, 4:]).max() < 1e-6


def test_score_with_intervals_matches_the_server_seeds(files):
    """``score --ci``: the same intervals the server records (seeds from the dataset hash)."""
    from harness.formats import ResultExpectation, read_measurement, read_result
    from harness.scoring import score_tier

    full, _, result = files
    r = runner.invoke(app, ["score", "--dataset", str(full), "--result", str(result), "--json", "--ci"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)
    dataset = read_measurement(full)
    expected = score_tier(dataset, read_result(result, ResultExpectation.for_dataset(dataset, max_bytes=2**30)))
    assert (scores["ci_low"], scores["ci_high"]) == (expected.ci_low, expected.ci_high)
    assert scores["ci_low"] < scores["blind"] < scores["ci_high"] and scores["n_resamples"] == 1000
    plain = json.loads(runner.invoke(app, ["score", "--dataset", str(full), "--result", str(result), "--json"]).output)
    assert plain["ci_low"] is None and plain["blind"] == scores["blind"]
    table = runner.invoke(app, ["score", "--dataset", str(full), "--result", str(result), "--ci"])
    half = (expected.ci_high - expected.ci_low) / 2
    assert table.exit_code == 0 and "95 %" in table.output and f"±{half:.4f}" in table.output


def test_build_shows_a_bar_per_scene_on_a_terminal_only(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from services.cli import science

    args = ["dataset", "build", "--tier", "dev", "--seed", "5", "--size", "small"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "a.h5")])
    assert r.exit_code == 0 and r.stderr.startswith("wrote ")  # not a terminal: no bar
    terminal = io.StringIO()
    monkeypatch.setattr(science, "console", Console(file=terminal, force_terminal=True, width=120))
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "b.h5")])
    assert r.exit_code == 0, r.output
    shown = terminal.getvalue()
    for label in ("building dev tier: scene 1/3", "scene 2/3", "scene 3/3", "3/3", "writing b.h5"):
        assert label in shown, shown
    # Same seed, same file content whether or not a bar was drawn.
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert a.attrs["content_hash"] == b.attrs["content_hash"]
    terminal.truncate(0)
    terminal.seek(0)
    r = runner.invoke(app, [*args, "--quiet", "--out", str(tmp_path / "c.h5")])
    assert r.exit_code == 0 and "building" not in terminal.getvalue()
