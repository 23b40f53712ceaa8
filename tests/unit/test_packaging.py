"""The wheel carries every console script, the generated API code and the package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {"cardapd", "cardapctl", "cardap-sim", "cardap-loadsvc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("cardapd-*.whl")
    return built


def test_wheel_has_every_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = zf.read(name).decode()
    section = text.split("[console_scripts]", 1)[1]
    names = {line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line}
    assert names >= SCRIPTS


def test_wheel_has_generated_code_and_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for needed in ("cardap/v1/terminal_pb2.py", "cardap/v1/terminal_pb2_grpc.py",
                   "cardap/v1/terminal_pb2.pyi", "cardapd/myna/profiles.toml",
                   "cardapd/py.typed", "cardapd/main.py", "cardap_sim/vcard/card.py"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
