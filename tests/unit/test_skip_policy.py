"""The skip policy bites: a skip for anything but what the machine lacks is a failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = '''
import pytest
from testenv import machine_lacks

def test_skips_for_a_missing_tool():
    pytest.skip("promtool is not installed")

@pytest.mark.skipif(True, reason="no fingerprint images")
def test_skipif_for_a_missing_fixture():
    pass

def test_skips_for_what_the_machine_lacks():
    machine_lacks("udevd")
'''


def test_only_machine_limits_may_skip() -> None:
    probe = ROOT / "tests" / "unit" / "_probe_skips.py"
    try:
        probe.write_text(PROBE)
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 str(probe)], cwd=ROOT, capture_output=True, text=True,
                                timeout=120, check=False)
    finally:
        probe.unlink(missing_ok=True)
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 failed, 1 skipped, 1 error" in out, out
    assert "SKIPPED [1] tests/unit/_probe_skips.py:" in out
    assert "machine lacks udevd" in out
    assert "not something this machine lacks: 'promtool is not installed'" in out, out
