"""services/submissions/storage.py: uploads are streamed with a cap and a sha256; a partial file
never stays.
"""

from __future__ import annotations

import io

import pytest

from services.errors import TooLargeError
from services.submissions.storage import stream_to_disk


def test_stream_to_disk_hashes_and_caps(tmp_path):
    import hashlib

    data = bytes(range(256)) * 10_000
    path, digest, size = stream_to_disk(io.BytesIO(data), directory=tmp_path / "up", max_bytes=len(data))
    assert path.read_bytes() == data and digest == hashlib.sha256(data).hexdigest() and size == len(data)
    with pytest.raises(TooLargeError, match=f"over the {len(data) - 1} byte upload cap"):
        stream_to_disk(io.BytesIO(data), directory=tmp_path / "up", max_bytes=len(data) - 1)
    assert [p.name for p in (tmp_path / "up").iterdir()] == [path.name]  # the partial file is gone
