"""The manual pages cardapd(8) and cardapctl(1), generated from the programs' own argparse
parsers by argparse-manpage (pinned in pyproject.toml), plus the sections a parser does not
hold (files, exit status, environment, see also) from release/man/<page>.include.

`make man` runs it in the development venv (pages in build/man); the Debian build runs it
with the package's own virtualenv and argparse-manpage on PYTHONPATH (debian/rules), so
the pages describe exactly the parsers that are shipped. Usage:
    python -m release.manpages [--version V] OUTDIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = 80
"""The width argparse wraps usage lines to (it reads $COLUMNS, else the terminal): fixed,
so that a page is the same whoever builds it (the language is: `manual_parser`)."""


@dataclass(frozen=True)
class Page:
    """One manual page and where its parser comes from."""

    prog: str
    section: str
    module: str
    function: str  # returns the argparse.ArgumentParser, its help in English
    summary: str  # the NAME line after "prog - "

    @property
    def filename(self) -> str:
        """e.g. cardapd.8"""
        return f"{self.prog}.{self.section}"


PAGES = (
    Page("cardapd", "8", "cardapd.main", "manual_parser",
         "card reader daemon for My Number Card AP terminals and gates"),
    Page("cardapctl", "1", "cardap.cli", "manual_parser", "command line client of cardapd"),
)


def render(page: Page, out: Path, ver: str) -> Path:
    """Write one page with argparse-manpage's command line; returns its path."""
    target = out / page.filename
    subprocess.run(
        [sys.executable, "-c", "from argparse_manpage.cli import main; main()",
         "--module", page.module, "--function", page.function, "--prog", page.prog,
         "--project-name", "cardapd", "--version", ver, "--manual-section", page.section,
         "--manual-title", "cardapd manual", "--description", page.summary,
         "--include", str(HERE / "man" / f"{page.prog}.include"), "--output", str(target)],
        check=True, env={**os.environ, "COLUMNS": str(COLUMNS)})
    return target


def main(argv: list[str] | None = None) -> int:
    """Write every page into OUTDIR."""
    p = argparse.ArgumentParser(prog="python -m release.manpages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path)
    p.add_argument("--version", default=None,
                   help="version in the footer (default: the installed cardapd's)")
    args = p.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    ver = args.version or version("cardapd")
    for page in PAGES:
        print(render(page, args.outdir, ver))
    return 0


if __name__ == "__main__":
    sys.exit(main())
