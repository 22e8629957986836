import pytest

from harness.baselines import run_baselines
from harness.scenes import build_tier


def test_baselines_score_every_pair_and_rank_mlem_over_nnls():
    datasets = [build_tier("hidden", seed=7, preset="small")]
    calls = []
    rows = run_baselines(datasets, solvers=["nnls", "mlem"], progress=lambda s, t: calls.append((s, t)))
    assert calls == [("nnls", "hidden"), ("mlem", "hidden")]
    by_solver = {r.solver: r for r in rows}
    assert by_solver["mlem"].blind > by_solver["nnls"].blind
    assert set(by_solver["nnls"].spec_error) == {
        "absorption_correction_error",
        "detector_solid_angle",
        "peak_overlap",
        "bremsstrahlung_background",
    }
    assert all(0 < r.blind < 1 and r.runtime_seconds >= 0 for r in rows)


def test_baselines_need_truth():
    with pytest.raises(ValueError, match="the dev dataset has no truth"):
        run_baselines([build_tier("dev", seed=1, preset="small").without_truth()], solvers=["nnls"])
