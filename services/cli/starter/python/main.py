"""An EDX Arena solver: reads /input/measurement.h5, writes /output/result.h5 (formats edx-arena-v1).

The server runs it with no network, a read-only root filesystem (only /output and /tmp are
writable), as uid 65534, with 1 CPU, 2 GiB of memory and 30 minutes. Progress goes to stderr:
`edx-arena run` shows the whole log; on the Hidden tier you see only the error that ended a
failed run.
"""

from __future__ import annotations

import sys
import time

import h5py
import numpy as np

INPUT = "/input/measurement.h5"
OUTPUT = "/output/result.h5"
#: The four instrument parameters θ a result corrects (/scenes/<id>/spec attributes).
SPEC = ("absorption_correction_error", "detector_solid_angle", "peak_overlap", "bremsstrahlung_background")


def reconstruct(y: np.ndarray, matrix: np.ndarray, ranges: dict[str, tuple[float, float]]):
    """One scene: the element maps x̂ (E, H, W) in [0, 1] and the corrected θ̂.

    y        (H, W, C) counts per scan pixel and energy channel;
    matrix   (E, C) the nominal operator: expected counts per unit fraction, λ = x · M;
    ranges   each θ parameter's published [lo, hi].

    >>> YOUR METHOD GOES HERE. <<<
    The baseline below is nominal least squares: it assumes θ = 0 (the nominal instrument),
    solves y ≈ x · M for every pixel at once, clips the fractions to [0, 1], and reports θ̂ = 0.
    """
    h, w, c = y.shape
    x, *_ = np.linalg.lstsq(matrix.T, y.reshape(-1, c).T.astype(np.float64), rcond=None)  # (E, H·W)
    x_hat = np.clip(x, 0.0, 1.0).reshape(-1, h, w)
    spec = {name: 0.0 for name in SPEC}  # nominal; must lie within ranges[name]
    return x_hat, spec


def main() -> int:
    started = time.monotonic()
    with h5py.File(INPUT, "r") as f, h5py.File(OUTPUT, "w") as out:
        matrix = f["operator/nominal_matrix"][()]
        ranges = {name: tuple(f["spec/ranges"].attrs[name]) for name in SPEC}
        out.attrs["format"] = "edx-arena-result"
        out.attrs["format_version"] = 1
        out.attrs["method"] = "nominal least squares (starter)"
        for scene_id, scene in f["scenes"].items():
            x_hat, spec = reconstruct(scene["y"][()], matrix, ranges)
            group = out.create_group(f"scenes/{scene_id}")
            group.create_dataset("x_hat", data=x_hat.astype(np.float32), compression="gzip")
            attrs = group.create_group("spec").attrs
            for name in SPEC:
                attrs[name] = float(spec[name])
            print(f"{scene_id}: done ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
