"""The reference image runs any harness solver, picked by $SOLVER, inside the sandbox."""

import pytest

from harness.formats import read_result, validate_result
from harness.sandbox import Outcome, RunLimits, RunSpec, run_container
from harness.scoring import score_tier


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("solver", ["mlem", "calibrated"])
def test_runner_runs_the_chosen_solver(images, measurement, expect, hidden_dataset, work_dir, solver):
    result = run_container(
        RunSpec(
            run_id=f"test-solver-{solver}",
            image="edx-arena/runner:latest",
            input_path=measurement,
            work_dir=work_dir / solver,
            limits=RunLimits(memory_bytes=2 * 2**30, wall_seconds=600),
            environment={"SOLVER": solver},
            validate_output=lambda p: validate_result(p, expect),
        ),
        client=images,
    )
    assert result.outcome == Outcome.succeeded, (result.message, result.log[-2000:])
    assert f"{solver}: wrote /output/result.h5" in result.log
    score = score_tier(hidden_dataset, read_result(result.output_path, expect))
    assert 0.3 < score.blind < 1
    if solver == "calibrated":  # the spec is estimated, not left nominal
        assert any(s.spec_error["detector_solid_angle"] < 0.02 for s in score.scenes)
