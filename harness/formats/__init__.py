"""HDF5 formats ``edx-arena-v1`` (design §4): measurement and result files.

Streamed, atomic I/O for the harness and a validator that rejects hostile uploads with
a precise :class:`~harness.errors.FormatError` before anything is queued.

Measurement files carry a tier's scenes, the nominal operator and (in truth files) the
truth; result files carry a method's maps and corrected spec per scene. The layouts are
documented in :mod:`harness.formats._measurement` and :mod:`harness.formats._result`.

Validation policy (see :mod:`harness.formats._safety`): size cap via ``os.stat`` before
opening; files are opened read-only without locking; no link is ever followed (soft,
external and user-defined links are rejected anywhere, as are external and virtual
datasets); shapes, dtypes, filters (gzip/lzf/shuffle only) and chunk sizes are checked
from metadata before any value is read; values are then read one chunk at a time.
Because libhdf5 itself may crash on a crafted file, the API validates uploads with
:func:`validate_result_isolated` (a resource-limited child process).
"""

from __future__ import annotations

from ._atomic import file_sha256
from ._isolated import validate_result_isolated
from ._layout import FORMAT_VERSION, MEASUREMENT_FORMAT, RESULT_FORMAT
from ._measurement import (
    operator_from_measurement,
    read_measurement,
    read_truth_maps,
    validate_measurement,
    write_measurement,
    write_run_view,
)
from ._output import OUTPUT_RULES, output_error_message, output_error_messages, validate_output
from ._result import ResultExpectation, read_result, validate_result, write_result

__all__ = [
    "FORMAT_VERSION",
    "MEASUREMENT_FORMAT",
    "OUTPUT_RULES",
    "RESULT_FORMAT",
    "ResultExpectation",
    "file_sha256",
    "operator_from_measurement",
    "output_error_message",
    "output_error_messages",
    "read_measurement",
    "read_result",
    "read_truth_maps",
    "validate_measurement",
    "validate_output",
    "validate_result",
    "validate_result_isolated",
    "write_measurement",
    "write_result",
    "write_run_view",
]
