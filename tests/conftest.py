"""Suite-wide policy.

Under CI (``CI=true``) a skipped test is a failed test: Docker, PostgreSQL and Redis are
provided by ``scripts/setup.sh``, so a skip can only mean a core path went untested.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which is a failure: {report.longrepr}"
