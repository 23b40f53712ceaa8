"""`make deb`: cardapd_<version>_<arch>.deb, built with Debian's tooling from a source tree.

1. The version: setuptools-scm on the tree (the git tag; a `git archive` tarball's
   .git_archival.txt; docs/decisions.md D36), as a Debian version (`~dev` sorts first).
2. The tree's files (tracked and new, not ignored; the working tree as it is) are staged
   under OUT/cache/<inputs hash>/, so the repository is never written to and an unchanged
   tree is not built twice.
3. The gRPC code (grpcio-tools, pinned) and debian/changelog (from CHANGELOG.md) are
   generated into the staged tree.
4. dpkg-buildpackage -b in a clean environment: debian/rules builds the virtualenv with
   dh-virtualenv from release/requirements.txt (locked, hash-checked) and the manual pages
   from the shipped parsers (argparse-manpage, pinned).
5. lintian, which must report no error (its report is kept beside the .deb).

The tools (a venv with setuptools-scm and grpcio-tools, argparse-manpage, pip's cache)
live under CACHE (default build/cache), keyed by their pins; the install test passes its
own repository's CACHE when it builds an older tag with that tag's own copy of this
script. Needs only Debian's python3.11 and the build dependencies of debian/control.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from release import changelog

PYTHON = "/usr/bin/python3.11"
# Not part of the production package's source: the development distribution, the tests,
# the benchmarks, CI (a change there does not rebuild the package).
NOT_STAGED = ("dev/", "tests/", "bench/", ".ci/")
TOOLS = ("setuptools-scm", "vcs-versioning", "grpcio-tools", "mypy-protobuf")
MANPAGE_TOOL = "argparse-manpage"
KEEP_BUILDS = 4  # cached builds kept in OUT/cache (the newest)
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"debbuild: {msg}", file=sys.stderr, flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    """A build environment free of the machine's pip configuration (local indexes, a
    constraints file) and of the caller's virtualenv: only PyPI and the pins count."""
    env = {"PATH": CLEAN_PATH, "HOME": str(Path.home()), "LANG": "C.UTF-8",
           "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1"}
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        logfile: Path | None = None) -> str:
    """Run a command; its output, or a failure that shows the end of it."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            check=False)
    output = result.stdout + result.stderr
    if logfile is not None:
        with logfile.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{output}\n")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise SystemExit(f"debbuild: {' '.join(cmd[:3])} … failed ({result.returncode}):\n"
                         f"{tail}")
    return result.stdout


# ---------------------------------------------------------------------- pins and tools


def pins(root: Path) -> dict[str, str]:
    """name → exact version of every `name==version` in pyproject.toml (build system and
    extras): the one place tools are pinned."""
    data = tomllib.loads((root / "pyproject.toml").read_text())
    specs = list(data["build-system"]["requires"])
    for group in data["project"].get("optional-dependencies", {}).values():
        specs.extend(group)
    found = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", spec.strip())
        if m:
            found[m.group(1).lower().replace("_", "-")] = m.group(2)
    return found


def _tool_specs(root: Path, names: tuple[str, ...]) -> list[str]:
    versions = pins(root)
    missing = [n for n in names if n not in versions]
    if missing:
        raise SystemExit(f"debbuild: pyproject.toml pins no {', '.join(missing)}")
    return [f"{n}=={versions[n]}" for n in names]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (parallel builds and test workers wait their turn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tools_venv(root: Path, cache: Path) -> Path:
    """The build tools' venv (setuptools-scm, grpcio-tools, mypy-protobuf), made once per
    set of pins."""
    specs = _tool_specs(root, TOOLS)
    key = hashlib.sha256("\n".join(specs).encode()).hexdigest()[:16]
    venv = cache / f"tools-{key}"
    with locked(cache / "tools.lock"):
        if not (venv / ".complete").exists():
            log(f"build tools: {', '.join(specs)}")
            shutil.rmtree(venv, ignore_errors=True)
            env = clean_env(PIP_CACHE_DIR=str(cache / "pip"))
            run([PYTHON, "-m", "venv", str(venv)], env=env)
            run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *specs], env=env)
            (venv / ".complete").touch()
    return venv


def manpage_tool(root: Path, cache: Path) -> Path:
    """argparse-manpage alone in a directory (pure Python, no dependencies), for
    PYTHONPATH in debian/rules: nothing else shadows the package's own modules."""
    (spec,) = _tool_specs(root, (MANPAGE_TOOL,))
    target = cache / spec.replace("==", "-")
    with locked(cache / "tools.lock"):
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            run([PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                 spec], env=clean_env(PIP_CACHE_DIR=str(cache / "pip")))
            (target / ".complete").touch()
    return target


# ---------------------------------------------------------------------- the tree


def source_files(root: Path) -> list[str]:
    """The tree's files relative to `root` that the package is built from: git's tracked
    and new-but-not-ignored files in a checkout, every file otherwise (an unpacked `git
    archive`), less NOT_STAGED."""
    if (root / ".git").exists():
        out = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  cwd=root)
        names = sorted({n for n in out.split("\0") if n})
    else:
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return [n for n in names if not n.startswith(NOT_STAGED)
            and ((root / n).is_file() or (root / n).is_symlink())]


def inputs_hash(root: Path, files: list[str], version: str) -> str:
    """What the package is built from: every staged file's name, mode and content, and
    the version."""
    h = hashlib.sha256(version.encode())
    for name in files:
        path = root / name
        h.update(b"\0" + name.encode())
        if path.is_symlink():
            h.update(b"l" + os.readlink(path).encode())
        else:
            h.update(oct(path.stat().st_mode & 0o777).encode() + path.read_bytes())
    return h.hexdigest()[:20]


def stage(root: Path, files: list[str], dest: Path) -> None:
    """Copy `files` from `root` into `dest` (symlinks kept as links)."""
    for name in files:
        src, dst = root / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def scm_version(root: Path, tools: Path) -> str:
    """The PEP 440 version of the tree (setuptools-scm; SETUPTOOLS_SCM_PRETEND_VERSION
    overrides)."""
    env = clean_env()
    for name in ("SETUPTOOLS_SCM_PRETEND_VERSION", "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_CARDAPD"):
        if name in os.environ:
            env[name] = os.environ[name]
    return run([str(tools / "bin" / "python"), "-m", "setuptools_scm"], cwd=root,
               env=env).strip().splitlines()[-1]


def commit_info(root: Path) -> tuple[str, int | None]:
    """HEAD's short hash and commit time (empty, None outside a checkout)."""
    if not (root / ".git").exists():
        return "", None
    out = run(["git", "log", "-1", "--format=%h %ct"], cwd=root).split()
    return out[0], int(out[1])


def generate(src: Path, tools: Path, version: str, commit: str, when: int | None) -> None:
    """The gRPC code, the compiled message catalogues and debian/changelog, in the staged
    tree."""
    protos = sorted(str(p.relative_to(src)) for p in (src / "proto").rglob("*.proto"))
    run([str(tools / "bin" / "python"), "-m", "grpc_tools.protoc", "-I", "proto",
         "--python_out=clients", "--grpc_python_out=clients", "--mypy_out=clients",
         "--mypy_grpc_out=clients", *protos], cwd=src,
        env=clean_env(PATH=f"{tools / 'bin'}:{CLEAN_PATH}"))
    for po in sorted((src / "clients" / "cardap" / "locale").glob("*/LC_MESSAGES/*.po")):
        run(["msgfmt", "--check", f"--output-file={po.with_suffix('.mo')}", str(po)], cwd=src)
    text = changelog.render(
        changelog.parse((src / "CHANGELOG.md").read_text()), version,
        changelog.maintainer((src / "debian" / "control").read_text()),
        dev_date=None if when is None else datetime.fromtimestamp(when, UTC), commit=commit)
    (src / "debian" / "changelog").write_text(text)


# ---------------------------------------------------------------------- build


def build(root: Path, out: Path, cache: Path, *, lintian: bool = True) -> Path:
    """Build (or find already built) the package of `root`; returns the .deb."""
    started = time.monotonic()
    tools = tools_venv(root, cache)
    version = scm_version(root, tools)
    deb_version = changelog.debian_version(version)
    files = source_files(root)
    key = inputs_hash(root, files, version)
    arch = run(["dpkg", "--print-architecture"]).strip()
    name = f"cardapd_{deb_version}_{arch}.deb"
    work = out / "cache" / key
    with locked(out / ".lock"):
        built = work / name
        if built.exists() and (not lintian or (work / "lintian.txt").exists()):
            log(f"{name}: up to date ({work})")
            return _publish(built, out)
        shutil.rmtree(work, ignore_errors=True)
        src = work / f"cardapd-{deb_version}"
        src.mkdir(parents=True)
        log(f"{name}: staging {len(files)} files in {src}")
        stage(root, files, src)
        commit, when = commit_info(root)
        generate(src, tools, version, commit, when)
        env = clean_env(
            PIP_CACHE_DIR=str(cache / "pip"),
            SETUPTOOLS_SCM_PRETEND_VERSION_FOR_CARDAPD=version,
            CARDAPD_MANPAGE_TOOL=str(manpage_tool(root, cache)),
            DEB_BUILD_OPTIONS="noautodbgsym nocheck")
        log(f"{name}: dpkg-buildpackage (log: {work / 'build.log'})")
        run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=src, env=env,
            logfile=work / "build.log")
        if lintian:
            log(f"{name}: lintian")
            report = lint(built)
            (work / "lintian.txt").write_text(report)
        shutil.rmtree(src)
        (work / "build.json").write_text(json.dumps({
            "version": version, "deb_version": deb_version, "commit": commit,
            "seconds": round(time.monotonic() - started, 1)}))
        log(f"{name}: built in {time.monotonic() - started:.0f} s")
        _prune(out / "cache")
        return _publish(built, out)


def lint(deb: Path) -> str:
    """lintian's report of `deb` (overrides shown). The build fails on any error that is
    not overridden, and on an override that matches nothing (each override must say
    exactly what it silences)."""
    result = subprocess.run(["lintian", "--fail-on", "none", "--display-info",
                             "--show-overrides", "--tag-display-limit", "0", str(deb)],
                            capture_output=True, text=True, check=False, env=clean_env())
    report = result.stdout + result.stderr
    bad = [line for line in report.splitlines()
           if line.startswith("E: ") or "unused-override" in line
           or "mismatched-override" in line or "malformed-override" in line]
    if result.returncode != 0 or bad:
        raise SystemExit("debbuild: lintian:\n" + "\n".join(bad[:60] or [report[-3000:]]))
    return report


def _publish(built: Path, out: Path) -> Path:
    """The built package, also as OUT/<name> (a hard link to the cached one), with its
    lintian report beside it as OUT/<name without .deb>.lintian."""
    target = out / built.name
    for old in (*out.glob("cardapd_*.deb"), *out.glob("cardapd_*.lintian")):
        old.unlink()
    os.link(built, target)
    report = built.parent / "lintian.txt"
    if report.exists():
        os.link(report, target.with_suffix(".lintian"))
    return target


def _prune(cache: Path) -> None:
    """Keep the newest KEEP_BUILDS builds."""
    builds = sorted((p for p in cache.iterdir() if p.is_dir()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS:]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Build the package of the tree in the current directory."""
    p = argparse.ArgumentParser(prog="python3 -m release.debbuild", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("build/deb"),
                   help="where the .deb goes (default build/deb)")
    p.add_argument("--cache", type=Path,
                   default=Path(os.environ.get("CARDAPD_BUILD_CACHE", "build/cache")),
                   help="build tools and pip's cache ($CARDAPD_BUILD_CACHE, build/cache)")
    p.add_argument("--no-lintian", action="store_true", help="skip lintian")
    args = p.parse_args(argv)
    deb = build(Path.cwd(), args.out.resolve(), args.cache.resolve(),
                lintian=not args.no_lintian)
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
