"""The message catalogues: extract the English ids from the source, update the Japanese
`.po` files (`make i18n-extract`), and find ids without a translation (the unit tests).

Uses Babel (pinned in the development extras) for extraction and merging; `make
catalogues` compiles with msgfmt. Domains by source file (cardap.i18n.DOMAINS): the reason
registry is `reasons`, cardapctl's modules are `cli`, everything else of the daemon and the
client library is `cardapd`. Markers: `N_("…")`, `tr(lang, "…", …)` and cardapctl's
`Msg("…", …)` (a text said in English and in the user's language, cardap.clibase).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
LOCALE = ROOT / "clients" / "cardap" / "locale"
KEYWORDS = {"N_": None, "tr": (2,), "Msg": (1,)}
SOURCES = ("clients/cardap", "daemon/cardapd")
TRANSLATED = ("ja",)


def domain_of(path: Path) -> str | None:
    """The catalogue domain of a source file (None: not a source of messages)."""
    rel = path.relative_to(ROOT).as_posix()
    if path.parent.name == "v1" or path.suffix != ".py":  # generated protobuf code
        return None
    if rel == "clients/cardap/reasons.py":
        return "reasons"
    if rel.startswith("clients/cardap/cli") or rel == "clients/cardap/exitcodes.py":
        return "cli"
    return "cardapd"


def extract() -> dict[str, Catalog]:
    """Every marked id of the source, per domain, with where it is used."""
    catalogues: dict[str, Catalog] = {}
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            domain = domain_of(path)
            if domain is None:
                continue
            catalogue = catalogues.setdefault(domain, Catalog(project="cardapd",
                                                              domain=domain))
            for lineno, message, comments, _context in extract_from_file(
                    "python", str(path), keywords=KEYWORDS, comment_tags=("TRANSLATORS:",)):
                if isinstance(message, str) and message:
                    catalogue.add(message, locations=[(path.relative_to(ROOT).as_posix(),
                                                       lineno)],
                                  auto_comments=comments)
    return catalogues


def po_path(lang: str, domain: str) -> Path:
    """The `.po` file of `lang` and `domain`."""
    return LOCALE / lang / "LC_MESSAGES" / f"{domain}.po"


def read(lang: str, domain: str) -> Catalog:
    """The `.po` catalogue of `lang` and `domain` (empty when there is none)."""
    path = po_path(lang, domain)
    if not path.exists():
        return Catalog(locale=lang, domain=domain)
    with path.open("rb") as f:
        return read_po(f, locale=lang, domain=domain)


def untranslated(lang: str) -> Iterator[tuple[str, str, str]]:
    """(domain, msgid, first location) of every id in the source without a `lang` text,
    or whose translation drops or invents a `{placeholder}`."""
    import string

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    for domain, template in sorted(extract().items()):
        po = read(lang, domain)
        for message in template:
            if not message.id:
                continue
            where = ":".join(map(str, message.locations[0])) if message.locations else "?"
            found = po.get(message.id)
            if found is None or not found.string or found.fuzzy:
                yield domain, str(message.id), where
            elif fields(str(found.string)) != fields(str(message.id)):
                yield domain, str(message.id), f"{where} (placeholders differ)"


def update() -> list[Path]:
    """Write the templates and merge them into each translated `.po` (new ids empty, gone
    ids dropped); returns the files written."""
    written = []
    for domain, template in sorted(extract().items()):
        pot = LOCALE / f"{domain}.pot"
        pot.parent.mkdir(parents=True, exist_ok=True)
        with pot.open("wb") as f:
            write_po(f, template, width=100, omit_header=False, sort_output=True)
        written.append(pot)
        for lang in TRANSLATED:
            po = read(lang, domain)
            po.update(template, no_fuzzy_matching=True)
            po.obsolete.clear()
            path = po_path(lang, domain)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                write_po(f, po, width=100, sort_output=True, ignore_obsolete=True)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m release.catalogues [--check]`."""
    p = argparse.ArgumentParser(prog="release.catalogues", description=__doc__)
    p.add_argument("--check", action="store_true",
                   help="only list the ids without a translation (exit 1 if any)")
    args = p.parse_args(argv)
    if not args.check:
        for path in update():
            print(path.relative_to(ROOT))
    missing = [m for lang in TRANSLATED for m in untranslated(lang)]
    for domain, msgid, where in missing:
        print(f"untranslated ({domain}, {where}): {msgid!r}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
