"""The two distributions: production (daemon, card library, client library, cardapctl)
carries no development code; development (simulator, loading service, stack harness,
test-only entry point) carries its scripts and data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build(source: Path, out: Path, pattern: str) -> Path:
    # setuptools stages files in <source>/build and never prunes it: a module deleted
    # from the tree would still ship from a stale staging copy, so start and end clean.
    # It also rewrites <source>/*.egg-info with this build's version: keep the one the
    # editable install wrote (what importlib.metadata finds from the checkout), put it back.
    shutil.rmtree(source / "build", ignore_errors=True)
    kept = out / "egg-info-kept"
    for info in source.glob("*.egg-info"):
        shutil.copytree(info, kept / info.name)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(out), str(source)], capture_output=True, text=True, timeout=300,
            check=False)
    finally:
        shutil.rmtree(source / "build", ignore_errors=True)
        for info in source.glob("*.egg-info"):
            shutil.rmtree(info)
        for info in kept.glob("*.egg-info"):
            shutil.copytree(info, source / info.name)
        shutil.rmtree(kept, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob(pattern)
    return built


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(ROOT, tmp_path_factory.mktemp("prod"), "cardapd-*.whl")


@pytest.fixture(scope="module")
def development(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(ROOT / "dev", tmp_path_factory.mktemp("dev"), "cardapd_dev-*.whl")


def scripts(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = zf.read(name).decode()
    section = text.split("[console_scripts]", 1)[1]
    return {line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line}


def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_production_wheel(production: Path) -> None:
    assert scripts(production) == {"cardapd", "cardapctl"}
    files = names(production)
    for needed in ("cardap/v1/terminal_pb2.py", "cardap/v1/terminal_pb2_grpc.py",
                   "cardap/v1/terminal_pb2.pyi", "cardapd/myna/profiles.toml",
                   "cardapd/py.typed", "cardapd/main.py", "cardlib/gp/scp03.py",
                   "cardlib/py.typed", "cardap/cli.py"):
        assert needed in files, needed
    tops = {n.split("/", 1)[0] for n in files if "/" in n and ".dist-info" not in n}
    assert tops == {"cardapd", "cardlib", "cardap"}, tops
    assert not any("cardap_sim" in n or "cardapd_testing" in n or n.startswith(("tests/",
                                                                                "bench/"))
                   for n in files)


def test_development_wheel(development: Path) -> None:
    assert scripts(development) == {"cardap-sim", "cardap-loadsvc"}
    files = names(development)
    for needed in ("cardap_sim/vcard/card.py", "cardap_sim/loadsvc/server.py",
                   "cardap_sim/stack.py", "cardap_sim/fingerprints/arch.png",
                   "cardap_sim/fingerprints/README.md", "cardap_sim/hotplug/unplug_ifd.c",
                   "cardapd_testing/main.py"):
        assert needed in files, needed
    tops = {n.split("/", 1)[0] for n in files if "/" in n and ".dist-info" not in n}
    assert tops == {"cardap_sim", "cardapd_testing"}, tops
