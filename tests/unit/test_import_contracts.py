"""The layering holds, and each import contract bites: a deliberately bad import in a copy
of the tree makes `lint-imports` (what `make lint` runs) fail and name the contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("lib", "daemon", "clients", "dev")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the packages under `tree` (they shadow the installed ones)."""
    env = {"PYTHONPATH": ":".join(str(tree / s) for s in SOURCES), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"),
                           "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def copy_tree(dest: Path) -> Path:
    for name in SOURCES:
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = lint(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "bad_import", "contract"), [
    ("lib/cardlib/apdu.py", "import cardapd.errors", "The card library knows none of its users"),
    ("daemon/cardapd/readers/hub.py", "import grpc",
     "Protobuf and gRPC stay at the API edge"),
    ("daemon/cardapd/loading/journal.py", "from cardap.v1 import loading_pb2",
     "Protobuf and gRPC stay at the API edge"),
    ("daemon/cardapd/readers/owner.py", "import cardapd.loading.journal",
     "The daemon's layers"),
    ("daemon/cardapd/loading/journal.py", "import cardapd.operators.sessions",
     "The daemon's layers"),
    ("daemon/cardapd/errors.py", "import cardapd.config", "The daemon's layers"),
    ("daemon/cardapd/main.py", "import cardap_sim.stack",
     "Production imports nothing of development"),
    ("clients/cardap/client.py", "import cardapd.errors",
     "The client library stands on the protos alone"),
])
def test_a_bad_import_breaks_its_contract(tmp_path: Path, module: str, bad_import: str,
                                          contract: str) -> None:
    tree = copy_tree(tmp_path)
    with (tree / module).open("a") as f:
        f.write(f"\n{bad_import}  # deliberately against the layering\n")
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
