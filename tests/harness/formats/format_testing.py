"""Small hand-built tier datasets and result files for the format tests.

A module with its own name (not ``conftest``) so test modules can import it whatever other
``conftest.py`` files pytest has loaded.

Built by hand (small preset, random maps, θ drawn from the tier's ranges) so the format
tests do not depend on the phantom generator.
"""

from __future__ import annotations

import numpy as np

from harness.dataset import Result, Scene, SceneResult, TierDataset
from harness.forward import ELEMENTS, ForwardModel, OperatorConstants, Spec
from harness.tiers import PRESETS, REFERENCE_ROWS, SPEC_PARAMETERS, spec_ranges

REFERENCE_X = np.array([0.30, 0.05, 0.20, 0.10, 0.05, 0.10])


def make_dataset(tier: str = "public", *, seed: int = 7) -> TierDataset:
    rng = np.random.default_rng(seed)
    preset = PRESETS["small"]
    model = ForwardModel(preset)
    ranges = spec_ranges(tier)
    scenes = []
    for i in range(3):
        x = rng.uniform(0.0, 1.0, (len(ELEMENTS), preset.height, preset.width))
        x *= rng.uniform(0.5, 1.0) / x.sum(axis=0, keepdims=True)
        mask = np.zeros((preset.height, preset.width), dtype=bool)
        mask[:REFERENCE_ROWS] = True
        x[:, mask] = REFERENCE_X[:, None]
        spec = Spec.from_array(np.array([rng.uniform(*ranges[p]) for p in SPEC_PARAMETERS]))
        y = model.sample(x, spec, rng)
        scenes.append(Scene(f"s{i}", y, mask, REFERENCE_X.copy(), x_true=x, spec_true=spec))
    return TierDataset(tier, preset, OperatorConstants(), scenes, seed=seed)


def make_result(dataset: TierDataset, *, dtype=np.float32, seed: int = 1) -> Result:
    rng = np.random.default_rng(seed)
    return Result(
        scenes={
            s.scene_id: SceneResult(
                x_hat=rng.uniform(0, 1, s.x_true.shape).astype(dtype),
                spec=Spec(0.5, -0.01, 0.2, 0.03),
            )
            for s in dataset.scenes
        },
        method="test method",
    )
