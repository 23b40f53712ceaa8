"""The documentation stays true to the tree: no "(later" marker for something built, no
link to a file that is not there, and the decisions in order, each marked current or
superseded."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                          "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def test_no_later_markers() -> None:
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
             for p in markdown_files()
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\(later\b", line, re.IGNORECASE)]
    assert not found, "\n".join(found)


def test_intra_repo_links_resolve() -> None:
    broken = []
    for path in markdown_files():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue  # a URL or an anchor
                where = (path.parent / target.split("#", 1)[0]).resolve()
                if not where.exists():
                    broken.append(f"{path.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "\n".join(broken)


def test_the_link_check_can_fail(tmp_path: Path) -> None:
    probe = ROOT / "docs" / "_probe_links.md"
    try:
        probe.write_text("See [the missing guide](no-such-file.md).\n")
        assert any("no-such-file.md" in line for line in _broken([probe]))
    finally:
        probe.unlink(missing_ok=True)


def _broken(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        for target in LINK.findall(path.read_text()):
            if not (path.parent / target).exists():
                out.append(target)
    return out


def test_decisions_are_in_order_and_each_has_a_status() -> None:
    text = (ROOT / "docs" / "decisions.md").read_text()
    numbers = [int(n) for n in re.findall(r"(?m)^## D(\d+) ", text)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    sections = re.split(r"(?m)^## D\d+ ", text)[1:]
    for number, section in zip(numbers, sections, strict=True):
        status = section.splitlines()[1]
        assert re.fullmatch(r"\*Status: (current|superseded|partly superseded)\b.*\*", status), (
            f"D{number}: the line after the title must say *Status: current* or "
            f"*Status: superseded by …*, not {status!r}")
