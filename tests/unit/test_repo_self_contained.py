"""The repository runs on its own: no code or configuration names a path outside it.

A clone with nothing beside it must build, run and test (issue 11). This scans every
code and configuration file the repository holds for three ways of reaching out:
`../` paths that leave the tree, `Path(__file__)` parent chains that climb above the
repository, and absolute paths other than the system's own (`/usr`, `/etc`, `/run`, …).
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".json", ".service",
                 ".rules", ".sysusers", ".tmpfiles", ".c", ".h", ".proto", ".js", ".mjs",
                 ".ts", ".conf", ".in", ".install", ".links", ".dirs", ".postinst",
                 ".prerm", ".postrm", ".preinst"}
CODE_NAMES = {"Makefile", "run", "control", "rules", "changelog", "compat"}
SYSTEM_DIRS = {"usr", "etc", "var", "run", "proc", "sys", "dev", "tmp", "bin", "sbin", "lib",
               "lib64", "opt", "srv", "nonexistent"}
# Absolute strings that are not file system paths: D-Bus object paths, gRPC method names,
# HTTP paths served by the daemon's metrics endpoint.
# HTTP paths (the daemon's metrics endpoint, Prometheus' API) and sysfs device paths.
NOT_PATHS = ("/net/reactivated/", "/org/freedesktop/", "/cardap.v1.", "/grpc.",
             "/metrics", "/healthz", "/upload", "/api/", "/devices/")
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s\"'=(,\[{]))(/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._@+%{}$-]*)*)")
_RELATIVE_UP = re.compile(r"(?:^|(?<=[\s\"'=(,\[{:]))((?:\.\./)+[^\s\"',)\]}]*)")


def repo_files() -> list[Path]:
    """Every file of the repository (tracked, or new and not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def code_files() -> list[Path]:
    """The code and configuration files (documentation may quote any path)."""
    return [p for p in repo_files()
            if p.suffix in CODE_SUFFIXES or p.name in CODE_NAMES]


def is_system(path: str) -> bool:
    """Whether an absolute `path` belongs to the system (or is not a file path at all)."""
    if path == "/" or path.startswith(NOT_PATHS):
        return True
    first = path.lstrip("/").split("/", 1)[0]
    return first in SYSTEM_DIRS


def escapes(base: Path, relative: str) -> bool:
    """Whether `relative`, taken from `base`, leads outside the repository."""
    target = (base / relative).resolve()
    return ROOT not in (target, *target.parents)


def _parent_levels(node: ast.AST) -> int | None:
    """How many directories `Path(__file__)…parent/parents[n]` climbs (None: not that)."""
    levels = 0
    while True:
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            levels += 1
            node = node.value
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "parents" and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, int)):
            levels += node.slice.value + 1
            node = node.value.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("resolve", "absolute")):
            node = node.func.value
        else:
            break
    is_file = (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
               and node.func.id == "Path" and len(node.args) == 1
               and isinstance(node.args[0], ast.Name) and node.args[0].id == "__file__")
    return levels if is_file and levels else None


def python_problems(path: Path) -> list[str]:
    """Absolute non-system paths in string constants and `__file__` chains that climb out."""
    tree = ast.parse(path.read_text(), str(path))
    depth = len(path.relative_to(ROOT).parts)  # a file at depth d may climb d levels
    out: list[str] = []
    # In an f-string only the first part starts a path; later parts follow a value.
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values[1:]}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in inner):
            for text in _ABSOLUTE.findall(node.value):
                if not is_system(text):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: absolute path {text!r}")
            for text in _RELATIVE_UP.findall(node.value):
                if escapes(path.parent, text):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r} leaves the "
                               "repository")
        levels = _parent_levels(node)
        if levels is not None and levels > depth:
            line = getattr(node, "lineno", 0)
            out.append(f"{path.relative_to(ROOT)}:{line}: Path(__file__) climbs {levels} "
                       "levels, above the repository")
    return out


def text_problems(path: Path) -> list[str]:
    """The same checks, by pattern, for non-Python code and configuration."""
    out: list[str] = []
    base = ROOT if path.name == "Makefile" or path.parent.name == ".ci" else path.parent
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if path.suffix in (".py",):
            continue
        for text in _ABSOLUTE.findall(line):
            if not is_system(text):
                out.append(f"{path.relative_to(ROOT)}:{number}: absolute path {text!r}")
        for text in _RELATIVE_UP.findall(line):
            if escapes(base, text):
                out.append(f"{path.relative_to(ROOT)}:{number}: {text!r} leaves the repository")
    return out


def problems(files: list[Path]) -> list[str]:
    out: list[str] = []
    for path in files:
        out += python_problems(path) if path.suffix == ".py" else text_problems(path)
    return out


def test_no_code_or_config_names_a_path_outside_the_repository() -> None:
    found = problems(code_files())
    assert not found, "\n".join(found)


# Written with "@" for "/" so that this file holds no such path itself.
@pytest.mark.parametrize("bad", [
    'PRINTS = Path(__file__).resolve().parents[2].parent @ "shared@fixtures"\n',
    'PRINTS = Path(__file__).parent.parent.parent.parent @ "x"\n',
    'DATA = "..@..@..@shared@fixtures@fingerprints"\n',
    'HOME = "@work@shared@seeds"\n',
    'CONF = f"@root@{name}.toml"\n',
])
def test_the_check_catches_a_path_out(bad: str) -> None:
    """The scanner flags each way out when placed in a file two levels deep."""
    where = ROOT / "dev" / "cardap_sim" / "_probe_outside.py"
    try:
        where.write_text("from pathlib import Path\nname = 'x'\n" + bad.replace("@", "/"))
        assert problems([where]), bad
    finally:
        where.unlink(missing_ok=True)


def test_system_and_in_repo_paths_pass() -> None:
    where = ROOT / "dev" / "cardap_sim" / "_probe_inside.py"
    try:
        where.write_text('from pathlib import Path\nA = Path(__file__).resolve().parent / '
                         '"fingerprints"\nB = "/usr/libexec/fprintd"\nC = "../cardap_sim/x"\n'
                         'D = "/net/reactivated/Fprint/Manager"\n')
        assert problems([where]) == []
    finally:
        where.unlink(missing_ok=True)
