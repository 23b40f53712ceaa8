"""docs/benchmarks.md holds one marked section per benchmark; each run replaces its own."""

from __future__ import annotations

import re
from pathlib import Path

TITLE = "# cardapd benchmarks\n"


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of benchmark `name` (e.g. `bench.load`)."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(out: Path, name: str, body: str) -> None:
    """Replace the section of `name` in `out` (or add it); other sections are untouched.

    A file that predates the markers and starts with the bench.run report is taken as that
    report: the text before the first other section is the old bench.run section.
    """
    begin, end = markers(name)
    section = f"{begin}\n{body.strip()}\n{end}\n"
    text = out.read_text(encoding="utf-8") if out.exists() else TITLE
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    elif name == "bench.run" and "<!-- bench." in text and text.startswith(TITLE):
        rest = text[text.index("<!-- bench."):]
        text = TITLE + "\n" + section + "\n" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.write_text(text, encoding="utf-8")
