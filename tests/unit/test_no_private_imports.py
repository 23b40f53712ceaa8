"""No module imports a private name (`_x`) of another module: what a module shares it
names without a leading underscore, so that its insides can change (issue 12)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lib", "daemon", "clients", "dev")


def private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} "
                               f"import {alias.name}")
    return out


def test_no_private_name_crosses_a_module() -> None:
    found = [p for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))
             if "_pb2" not in f.name for p in private_imports(f)]
    assert not found, "\n".join(found)
