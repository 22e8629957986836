"""Fixtures for the reference-solver tests (small preset: 32 × 32 × 250, dose 100)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from solver_checks import STRIP_X, smooth_maps

from harness.dataset import Scene
from harness.forward import ForwardModel, Spec
from harness.tiers import REFERENCE_ROWS

SceneFactory = Callable[..., Scene]


@pytest.fixture(scope="session")
def operator() -> ForwardModel:
    return ForwardModel("small")


@pytest.fixture(scope="session")
def truth(operator: ForwardModel) -> np.ndarray:
    return smooth_maps(np.random.default_rng(20240611), operator.preset.height, operator.preset.width)


@pytest.fixture(scope="session")
def make_scene(operator: ForwardModel, truth: np.ndarray) -> SceneFactory:
    """``make_scene(spec=Spec(), *, noisy=True, seed=0)``: y noisy at dose 100, or exactly H(θ)x."""

    def build(spec: Spec = Spec(), *, noisy: bool = True, seed: int = 0) -> Scene:
        if noisy:
            y = operator.sample(truth, spec, np.random.default_rng(seed))
        else:
            y = operator.apply(truth, spec).astype(np.float32)
        mask = np.zeros(truth.shape[1:], dtype=bool)
        mask[:REFERENCE_ROWS] = True
        return Scene(f"test-{seed}", y, mask, STRIP_X.copy(), truth, spec)

    return build
