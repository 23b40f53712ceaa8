"""debian/changelog, generated from the human CHANGELOG.md (Keep a Changelog format).

Each `## [X.Y.Z] - YYYY-MM-DD` section becomes one Debian entry, newest first; its
`### Added` / `### Changed` / … headings become `[ Added ]` lines and its bullets `*`
items. A release build (the version is a tagged X.Y.Z) must find its own section, or the
build stops: write the CHANGELOG before tagging. A development build (X.Y.Z.devN+gHASH)
gets a top entry of its own with the `## [Unreleased]` items (or a line naming the
commit). Usage:

    python -m release.changelog --version 1.0.1.dev3+g1a2b3c4 [--date EPOCH] \
        [--commit HASH] CHANGELOG.md debian/control > debian/changelog
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from pathlib import Path

PACKAGE = "cardapd"
DISTRIBUTION = "stable"
SECTION = re.compile(r"^## \[(?P<name>[^\]]+)\](?:\s+-\s+(?P<date>\d{4}-\d{2}-\d{2}))?\s*$")
RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
PRE_RELEASE = re.compile(r"\.?(dev|a|b|rc)(\d+)")


class ChangelogError(ValueError):
    """CHANGELOG.md cannot give the entries this build needs."""


@dataclass
class Section:
    """One `## [name] - date` section: its lines, already in Debian form."""

    name: str
    day: date | None
    lines: list[str] = field(default_factory=list)


def debian_version(pep440: str) -> str:
    """The Debian version of a PEP 440 version: pre-releases sort before the release
    (`1.0.1.dev3+gabc` → `1.0.1~dev3+gabc`, `1.1.0rc1` → `1.1.0~rc1`)."""
    public, plus, local = pep440.partition("+")
    return PRE_RELEASE.sub(lambda m: f"~{m.group(1)}{m.group(2)}", public) + plus + local


def _items(body: list[str]) -> list[str]:
    """Bullets (with their continuation lines) and ### headings of one section."""
    out: list[str] = []
    current: list[str] | None = None

    def flush() -> None:
        if current:
            text = " ".join(current)
            out.extend(textwrap.wrap(text, 78, initial_indent="  * ",
                                     subsequent_indent="    ", break_on_hyphens=False))

    for raw in body:
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith("### "):
            flush()
            current = None
            if out:
                out.append("")
            out.append(f"  [ {stripped[4:].strip()} ]")
        elif stripped.startswith(("- ", "* ")):
            flush()
            current = [stripped[2:].strip()]
        elif stripped and current is not None and line.startswith(" "):
            current.append(stripped)
        elif stripped:
            flush()
            current = None
            out.extend(textwrap.wrap(stripped, 78, initial_indent="  ",
                                     subsequent_indent="  "))
        else:
            flush()
            current = None
    flush()
    return out


def parse(text: str) -> list[Section]:
    """The `## [...]` sections of a Keep a Changelog file, in file order."""
    sections: list[Section] = []
    body: list[str] = []
    for line in text.splitlines():
        m = SECTION.match(line)
        if m:
            if sections:
                sections[-1].lines = _items(body)
            day = date.fromisoformat(m["date"]) if m["date"] else None
            sections.append(Section(m["name"].strip(), day))
            body = []
        elif sections:
            if line.startswith("[") and "]: " in line:  # link reference definitions
                continue
            body.append(line)
    if sections:
        sections[-1].lines = _items(body)
    return sections


def maintainer(control: str) -> str:
    """The Maintainer field of debian/control."""
    m = re.search(r"(?m)^Maintainer:\s*(.+)$", control)
    if not m:
        raise ChangelogError("debian/control has no Maintainer field")
    return m.group(1).strip()


def _entry(version: str, lines: list[str], who: str, when: datetime) -> str:
    body = "\n".join(lines) if lines else "  * No change recorded."
    return (f"{PACKAGE} ({version}) {DISTRIBUTION}; urgency=medium\n\n{body}\n\n"
            f" -- {who}  {format_datetime(when)}\n")


def render(sections: list[Section], version: str, who: str, *,
           dev_date: datetime | None = None, commit: str = "") -> str:
    """The whole debian/changelog for a build of `version` (PEP 440)."""
    releases = [s for s in sections if RELEASE.match(s.name)]
    for s in releases:
        if s.day is None:
            raise ChangelogError(f"CHANGELOG.md: section [{s.name}] has no date")
    entries: list[str] = []
    if RELEASE.match(version):
        names = [s.name for s in releases]
        if version not in names:
            raise ChangelogError(f"CHANGELOG.md has no section [{version}]: write it before "
                                 f"tagging v{version}")
        releases = releases[names.index(version):]
    else:
        unreleased = next((s for s in sections if s.name.lower() == "unreleased"), None)
        lines = list(unreleased.lines) if unreleased and unreleased.lines else []
        note = f"Development build of git commit {commit}." if commit else \
            "Development build."
        lines.append(f"  * {note}")
        entries.append(_entry(debian_version(version), lines, who,
                              dev_date or datetime.now(UTC)))
    for s in releases:
        assert s.day is not None
        when = datetime(s.day.year, s.day.month, s.day.day, 12, 0, tzinfo=UTC)
        entries.append(_entry(s.name, s.lines, who, when))
    return "\n".join(entries)


def main(argv: list[str] | None = None) -> int:
    """Print debian/changelog."""
    p = argparse.ArgumentParser(prog="python -m release.changelog", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("changelog", type=Path, help="CHANGELOG.md")
    p.add_argument("control", type=Path, help="debian/control (for the Maintainer)")
    p.add_argument("--version", required=True, help="the build's PEP 440 version")
    p.add_argument("--date", type=int, default=None,
                   help="a development entry's time (Unix seconds; default now)")
    p.add_argument("--commit", default="", help="a development entry's git commit")
    args = p.parse_args(argv)
    when = datetime.fromtimestamp(args.date, UTC) if args.date is not None else None
    try:
        text = render(parse(args.changelog.read_text()), args.version,
                      maintainer(args.control.read_text()), dev_date=when, commit=args.commit)
    except ChangelogError as exc:
        print(f"release.changelog: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
