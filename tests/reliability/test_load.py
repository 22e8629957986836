"""A smaller P6 load through the real stack (benchmarks/bench_load.py): 100 HDF5 submissions
from 20 concurrent clients, 2 workers; every one scored, none lost, none duplicated."""

from __future__ import annotations

import pytest


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_100_submissions_from_20_clients_all_scored_once(tmp_path):
    from benchmarks.bench_load import run_load

    report = run_load(submissions=100, clients=20, workers=2, work_dir=tmp_path, timeout=600)
    assert report.accepted == 100 and report.refused == 0, report
    assert report.scored == 100 and report.failed == 0, report
    assert report.lost == 0 and report.duplicated == 0, report
