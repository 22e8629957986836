"""Fixtures for the format tests; the builders live in :mod:`format_testing`."""

from __future__ import annotations

import pytest
from format_testing import make_dataset, make_result

from harness.dataset import TierDataset
from harness.formats import ResultExpectation, write_result


@pytest.fixture(scope="session")
def dataset() -> TierDataset:
    return make_dataset()


@pytest.fixture(scope="session")
def expect(dataset) -> ResultExpectation:
    return ResultExpectation.for_dataset(dataset, max_bytes=8 << 20)


@pytest.fixture
def result_path(dataset, tmp_path):
    """A valid result file for ``dataset`` (float32 maps), fresh per test."""
    path = tmp_path / "result.h5"
    write_result(make_result(dataset), path)
    return path
