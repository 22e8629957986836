"""Names and versions of the ``edx-arena-v1`` HDF5 formats (design §4)."""

from __future__ import annotations

__all__ = ["FORMAT_VERSION", "LINES_DTYPE", "MEASUREMENT_FORMAT", "RESULT_FORMAT", "SPEC_TRUE_PREFIX"]

import numpy as np

MEASUREMENT_FORMAT = "edx-arena-measurement"
RESULT_FORMAT = "edx-arena-result"
FORMAT_VERSION = 1
#: Scene-group attributes ``spec_true/<parameter>`` hold the true θ (truth files only).
SPEC_TRUE_PREFIX = "spec_true/"
#: ``/lines`` is one compound table: ASCII element and line names, energy (keV), weight.
LINES_DTYPE = np.dtype([("element", "S8"), ("line", "S8"), ("energy_keV", "<f8"), ("weight", "<f8")])
