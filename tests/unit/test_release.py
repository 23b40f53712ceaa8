"""Release tooling: the Debian version of a git-tag version, debian/changelog from
CHANGELOG.md (checked by dpkg's own parser), the package's dependency lock against the
pins, the manual pages from the parsers, and the configuration examples it ships."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from cardapd.config import load_config
from cardapd.myna.aids import CARD_FACE_AID, JPKI_AID, JUKI_AID
from release.changelog import ChangelogError, debian_version, maintainer, parse, render
from release.manpages import PAGES

ROOT = Path(__file__).resolve().parents[2]
CHANGELOG = ROOT / "CHANGELOG.md"
CONTROL = ROOT / "debian" / "control"
EXAMPLES = ROOT / "docs" / "examples"


def dpkg_compare(a: str, op: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0


@pytest.mark.parametrize(("pep440", "debian"), [
    ("1.0.0", "1.0.0"),
    ("1.0.1.dev3+g1a2b3c4", "1.0.1~dev3+g1a2b3c4"),
    ("1.0.1.dev3+g1a2b3c4.d20261207", "1.0.1~dev3+g1a2b3c4.d20261207"),
    ("0.1.dev72+gdbe492432", "0.1~dev72+gdbe492432"),
    ("1.1.0rc1", "1.1.0~rc1"),
    ("2.0.0b2", "2.0.0~b2"),
    ("1.0.1.dev3+gab12", "1.0.1~dev3+gab12"),  # a/b in the hash are not pre-releases
])
def test_debian_version(pep440: str, debian: str) -> None:
    assert debian_version(pep440) == debian


def test_debian_versions_sort_like_the_releases() -> None:
    order = ["0.1~dev72+gdbe492432", "1.0.0", "1.0.1~dev3+g1a2b3c4",
             "1.0.1~dev3+g1a2b3c4.d20261207", "1.0.1", "1.1.0~rc1", "1.1.0"]
    for older, newer in itertools.pairwise(order):
        assert dpkg_compare(older, "lt", newer), (older, newer)


def parsed(text: str, field: str) -> list[str]:
    """`field` of every entry, as dpkg-parsechangelog reads `text`."""
    out = subprocess.run(["dpkg-parsechangelog", "-l", "-", "--format", "rfc822", "--all"],
                         input=text, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return re.findall(rf"(?m)^{field}: (.*)$", out)


def test_the_changelog_of_a_release_build() -> None:
    sections = parse(CHANGELOG.read_text())
    text = render(sections, "1.0.0", maintainer(CONTROL.read_text()))
    assert text.startswith("cardapd (1.0.0) stable; urgency=medium\n")
    assert parsed(text, "Version") == ["1.0.0"]
    assert "  * Counters and histograms no longer expose `_created` series." in text


def test_the_changelog_of_a_development_build() -> None:
    from datetime import UTC, datetime
    sections = parse(CHANGELOG.read_text())
    when = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)
    text = render(sections, "1.0.1.dev3+g1a2b3c4", maintainer(CONTROL.read_text()),
                  dev_date=when, commit="1a2b3c4")
    assert parsed(text, "Version") == ["1.0.1~dev3+g1a2b3c4", "1.0.0"]
    assert "  * Development build of git commit 1a2b3c4." in text
    assert " -- cardapd maintainers <maintainers@cardapd.example.org>  Tue, 08 Dec 2026 " \
           "09:30:00 +0000" in text


def test_a_tag_without_its_changelog_section_stops_the_build() -> None:
    sections = parse(CHANGELOG.read_text())
    with pytest.raises(ChangelogError, match=r"no section \[9\.9\.9\]: write it before "
                                             r"tagging v9\.9\.9"):
        render(sections, "9.9.9", "x <x@example.org>")


def test_unreleased_items_and_subsections() -> None:
    text = ("# Changelog\n\n## [Unreleased]\n\n### Fixed\n\n- A fix that is long enough to be "
            "wrapped by the generator\n  onto a second line.\n\n## [1.0.0] - 2026-12-07\n\n"
            "- First.\n\n[1.0.0]: https://example.org/v1.0.0\n")
    out = render(parse(text), "1.0.1.dev1+gabc", "x <x@example.org>", commit="abc")
    assert "  [ Fixed ]\n  * A fix that is long enough to be wrapped by the generator onto" in out
    assert "https://example.org" not in out  # link definitions are not changes
    assert parsed(out, "Version") == ["1.0.1~dev1+gabc", "1.0.0"]
    with pytest.raises(ChangelogError, match="has no date"):
        render(parse("## [1.0.0]\n- x\n"), "1.0.0", "x <x@example.org>")


def test_the_trees_own_version_has_a_changelog() -> None:
    """Whatever the tree's version (on a tag: its section must exist), it renders."""
    scm = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "setuptools_scm"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    version = scm.stdout.strip().splitlines()[-1]
    text = render(parse(CHANGELOG.read_text()), version, maintainer(CONTROL.read_text()))
    assert parsed(text, "Version")[0] == debian_version(version)


def test_the_lock_pins_what_pyproject_pins() -> None:
    """release/requirements.txt (make lock) has every dependency at its pinned version,
    each with hashes; nothing in it is a development tool."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (ROOT / "release" / "requirements.txt").read_text()
    entries = dict(re.findall(r"(?m)^([A-Za-z0-9_.-]+)==(\S+) \\$", lock))
    norm = {k.lower().replace("_", "-"): v for k, v in entries.items()}
    for dep in deps:
        name, version = dep.split("==")
        assert norm.get(name.lower()) == version, dep
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9_.-]+==)", lock)[1:]
    assert len(blocks) == len(entries)
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]
    for tool in ("pytest", "mypy", "ruff", "grpcio-tools", "setuptools-scm"):
        assert tool not in norm


def test_manual_pages_from_the_parsers(tmp_path: Path) -> None:
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "release.manpages",
                             "--version", "1.2.3", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.split() == [str(tmp_path / p.filename) for p in PAGES]
    from cardap.cli import parser as cardapctl_parser
    from cardapd.main import build_parser
    for page, parser in zip(PAGES, (build_parser(), cardapctl_parser()), strict=True):
        text = (tmp_path / page.filename).read_text()
        assert text.startswith(f'.TH {page.prog.upper()} "{page.section}" ')
        assert '"1.2.3"' in text.splitlines()[0] or "1.2.3" in text
        for action in parser._actions:  # every option of the parser is on the page
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert option.replace("-", r"\-") in text, (page.prog, option)
        for section in ("FILES", "SEE ALSO"):
            assert f".SH {section}" in text, (page.prog, section)
        rendered = subprocess.run(["man", "-l", str(tmp_path / page.filename)],
                                  capture_output=True, text=True, timeout=60, check=False,
                                  env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
        assert rendered.returncode == 0, rendered.stderr
    assert ".SH EXIT STATUS" in (tmp_path / "cardapd.8").read_text()
    # English and the same bytes whatever the builder's locale and terminal (issue 18)
    japanese = tmp_path / "ja"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "release.manpages",
                    "--version", "1.2.3", str(japanese)], cwd=ROOT, capture_output=True,
                   check=True, timeout=120,
                   env={**env, "LANG": "ja_JP.UTF-8", "LANGUAGE": "ja", "COLUMNS": "200"})
    for page in PAGES:
        assert (japanese / page.filename).read_bytes() == \
            (tmp_path / page.filename).read_bytes(), page.filename


BUILT_IN = {JPKI_AID, CARD_FACE_AID, JUKI_AID}


@pytest.mark.parametrize("name", ["kiosk", "gate"])
def test_the_shipped_examples_load_and_name_no_built_in_ap(name: str) -> None:
    cfg = load_config(EXAMPLES / f"{name}.toml")
    assert cfg.tap.type_c_aids
    for aid in cfg.tap.type_c_aids:
        assert bytes(aid) not in BUILT_IN, f"{name}: {bytes(aid).hex()} is a built-in AP"
    for ap in cfg.read_aps:
        assert bytes(ap.aid) not in BUILT_IN
    if name == "kiosk":
        assert cfg.loading.configured
        assert not cfg.sockets.gate.enabled
    else:
        assert not cfg.loading.configured
        assert cfg.operators.biometric == "none"
        assert [s.role for s in cfg.sockets.enabled()] == ["gate", "ops"]


def test_the_conffile_is_valid_and_sets_nothing() -> None:
    path = ROOT / "debian" / "cardapd.toml"
    assert load_config(path) == load_config(None)
    assert all(not line.strip() or line.startswith("#")
               for line in path.read_text().splitlines())
