"""A participant's script as the Hidden tier runs it: least squares with the nominal operator.

Reads /input/measurement.h5, writes /output/result.h5 (design §4), using only numpy and h5py
from the reference base image.
"""

import h5py
import numpy as np

SPEC = ("absorption_correction_error", "detector_solid_angle", "peak_overlap", "bremsstrahlung_background")

with h5py.File("/input/measurement.h5", "r") as f, h5py.File("/output/result.h5", "w") as out:
    matrix = f["operator/nominal_matrix"][()]  # (E, C): counts per unit fraction, λ = x·M
    out.attrs["format"] = "edx-arena-result"
    out.attrs["format_version"] = 1
    out.attrs["method"] = "nominal least squares (script)"
    for scene_id, scene in f["scenes"].items():
        y = scene["y"][()]
        h, w, c = y.shape
        x, *_ = np.linalg.lstsq(matrix.T, y.reshape(-1, c).T, rcond=None)  # (E, H·W)
        group = out.create_group(f"scenes/{scene_id}")
        group.create_dataset("x_hat", data=np.clip(x, 0, 1).reshape(-1, h, w).astype(np.float32))
        spec = group.create_group("spec")
        for name in SPEC:
            spec.attrs[name] = 0.0
print("wrote /output/result.h5")
