"""Japanese and English for every human-facing text: gettext catalogues, a language per call.

Message ids are the English texts. Code marks them with `N_()` where a text is kept and
translated later (a registry, a table of next actions) and calls `tr(lang, msgid,
**values)` where it is shown. The Japanese catalogues are
`cardap/locale/ja/LC_MESSAGES/<domain>.po` (one domain per area, see DOMAINS), compiled
to `.mo` by `make catalogues` (msgfmt, part of `make setup`) and by the package build;
English needs none (the ids are English). Logs, metrics and audit rows never go through
here: they stay in one fixed language (codes and English) so that queries and the audit
chain never depend on a locale (docs/decisions.md).

Where the language comes from: the daemon's `[daemon] language`, each call's gRPC
metadata `accept-language` (`negotiate`), the CLI's `LANGUAGE`/`LC_ALL`/`LC_MESSAGES`/
`LANG` (`from_environment`).
"""

from __future__ import annotations

import functools
import gettext
import logging
import os
import string
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "ja")
"""The languages every human-facing text exists in."""
DEFAULT = "en"
DOMAINS = ("reasons", "cardapd", "cli")
"""Catalogue domains: `reasons` (error reasons: meaning and next step), `cardapd` (the
daemon's texts: diagnoses, prompts, the yearly report), `cli` (cardapctl's output)."""
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

log = logging.getLogger(__name__)


def N_(msgid: str) -> str:
    """Mark `msgid` for extraction; it is translated where it is shown (`tr`)."""
    return msgid


class MissingCatalogue(RuntimeError):
    """A catalogue of a supported language is not compiled (run `make catalogues`)."""


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """Every domain's catalogue of `lang`, chained (English: the ids themselves)."""
    lang = lang if lang in LANGUAGES else DEFAULT
    if lang == DEFAULT:
        return gettext.NullTranslations()
    chain: gettext.NullTranslations | None = None
    for domain in DOMAINS:
        try:
            t = gettext.translation(domain, LOCALE_DIR, languages=[lang])
        except FileNotFoundError as exc:
            raise MissingCatalogue(f"no compiled {lang} catalogue {domain!r} under "
                                   f"{LOCALE_DIR} (make catalogues)") from exc
        if chain is None:
            chain = t
        else:
            chain.add_fallback(t)
    assert chain is not None
    return chain


class _Keep(dict[str, Any]):
    """Format values; a placeholder without a value stays as it is (never a KeyError)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def tr(lang: str, msgid: str, /, **values: Any) -> str:
    """`msgid` in `lang`, its `{placeholders}` filled from `values`."""
    translated = translations(lang).gettext(msgid)
    if not values:
        return translated
    return string.Formatter().vformat(translated, (), _Keep(values))


def negotiate(header: str | None, default: str = DEFAULT) -> str:
    """The best supported language of an Accept-Language value (RFC 9110: `ja-JP,
    ja;q=0.9, en;q=0.8`); `default` when it names none we have."""
    if not header:
        return default
    best, best_q = default, -1.0
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary == "*":
            primary = default
        if primary in LANGUAGES and q > 0 and (q > best_q or (q == best_q and position == 0)):
            best, best_q = primary, q
    return best


def from_environment(env: Mapping[str, str] | None = None) -> str:
    """The language of a command-line user, as gettext finds it: the first of LANGUAGE
    (a colon-separated list), LC_ALL, LC_MESSAGES, LANG that is set; C/POSIX is English."""
    env = os.environ if env is None else env
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if not value:
            continue
        for item in value.split(":"):
            primary = item.split(".")[0].split("@")[0].split("_")[0].split("-")[0].lower()
            if primary in LANGUAGES:
                return primary
            if primary in ("c", "posix"):
                return DEFAULT
        if name != "LANGUAGE":
            return DEFAULT
    return DEFAULT


def wide(ch: str) -> bool:
    """Whether `ch` takes two terminal columns (a wide or full-width character: kanji,
    kana, full-width punctuation)."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def width(text: str) -> int:
    """Terminal columns of `text`, for aligning and wrapping Japanese (str.ljust and
    textwrap count characters)."""
    return sum(2 if wide(ch) else 1 for ch in text)


def ljust(text: str, columns: int) -> str:
    """`text` padded with spaces on the right to `columns` terminal columns."""
    return text + " " * max(columns - width(text), 0)


def rjust(text: str, columns: int) -> str:
    """`text` padded with spaces on the left to `columns` terminal columns."""
    return " " * max(columns - width(text), 0) + text
