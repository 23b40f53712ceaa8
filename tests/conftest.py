"""Suite-wide rules: a skip is allowed only for what the machine lacks (see testenv)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings
from testenv import MACHINE_LACKS

# Property tests check what holds, never how fast: hypothesis's 200 ms per-example deadline
# would fail a test whenever the shared CI machine pauses the process (performance is
# `make bench`'s business). `derandomize` is left off: each run tries new examples.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Iterator[None]:
    """Turn a skip whose reason is not "machine lacks …" into a failure.

    A skip that hides a missing fixture or a tool `make setup` installs would let the
    suite pass without running what it claims to run (issue 11).
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(MACHINE_LACKS):
        # Name the test, not the line of testenv that raised the skip.
        path, line, _ = item.location
        report.longrepr = (path, (line or 0) + 1, f"Skipped: {reason}")
    else:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: skipped for a reason that is not something this "
                           f"machine lacks: {reason!r}. A test may skip only through "
                           "testenv.machine_lacks; anything the repository carries or "
                           "`make setup` installs is required.")
