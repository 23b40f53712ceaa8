"""`--help` in the user's language: what argparse itself writes around our texts.

Our own help texts are message ids translated where the parser is built (`tr(language,
"…")`, the `cli` and `cardapd` catalogues). What argparse adds — "usage: ", the group
titles, the `-h` line — comes from its own gettext calls in the global `messages` domain,
which no catalogue of ours serves; `localize` replaces them on a built parser (never by
changing global gettext state) and gives it a formatter that wraps Japanese by display
width. What stays argparse's English: its error messages ("the following arguments are
required", "invalid choice") and "show program's version number and exit" where a
`--version` has no help of its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from cardap.i18n import DEFAULT, N_, tr, wide, width

TITLES = (N_("positional arguments"), N_("options"))
"""argparse's own group titles (Python 3.10 and later)."""
HELP = N_("show this help message and exit")
USAGE = N_("usage: ")
NO_LINE_START = frozenset("、。，．・：；？！）」』】〕”’"
                          "ーぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ")
"""What must not begin a Japanese line (kinsoku): closing punctuation, the long-vowel mark
and small kana stay on the line before."""
NO_LINE_END = frozenset("（「『【〔“‘")
"""Opening brackets, which must not end a line: they go to the next one."""


def _tokens(text: str) -> Iterator[str]:
    """Units a line may break between: a run of narrow non-space characters (a word, an
    option name), one space, or one wide character."""
    word = ""
    for ch in text:
        if ch == " " or wide(ch):
            if word:
                yield word
                word = ""
            yield ch
        else:
            word += ch
    if word:
        yield word


def wrap(text: str, columns: int) -> list[str]:
    """Lines of at most `columns` terminal columns, broken at spaces or between wide
    characters (Japanese has no spaces), never before closing punctuation or after an
    opening bracket (a line may run over by such a character rather than break there)."""
    lines: list[str] = []
    line, used = "", 0
    for piece in _tokens(text):
        size = width(piece)
        if piece == " " and not line:
            continue
        if line and used + size > columns and piece != " " and piece not in NO_LINE_START:
            carry = ""
            while len(line) > 1 and line[-1] in NO_LINE_END:
                line, carry = line[:-1], line[-1] + carry
            lines.append(line.rstrip(" "))
            line, used = carry, width(carry)
        line += piece
        used += size
    if line.strip():
        lines.append(line.rstrip(" "))
    return lines


_FORMATTERS: dict[tuple[str, type[argparse.HelpFormatter]], type[argparse.HelpFormatter]] = {}


def formatter(language: str, base: type[argparse.HelpFormatter] = argparse.HelpFormatter
              ) -> type[argparse.HelpFormatter]:
    """A `base` formatter that writes argparse's "usage: " in `language` and wraps text by
    terminal columns (what a Japanese line needs; for English the same as argparse's).
    One class per language and base (made once)."""
    made = _FORMATTERS.get((language, base))
    if made is not None:
        return made

    class Localized(base):  # type: ignore[valid-type,misc]
        def _format_usage(self, usage: str | None, actions: object, groups: object,
                          prefix: str | None) -> str:
            if prefix is not None:
                return str(super()._format_usage(usage, actions, groups, prefix))
            said = tr(language, USAGE)
            # argparse indents continuation lines by len(prefix): give it the prefix's
            # columns in spaces, then put the words in front
            pad = " " * width(said)
            text = str(super()._format_usage(usage, actions, groups, pad))
            return said + text[len(pad):]

        def _split_lines(self, text: str, columns: int) -> list[str]:
            if language == DEFAULT:
                return list(super()._split_lines(text, columns))
            return wrap(self._whitespace_matcher.sub(" ", text).strip(), columns)

        def _fill_text(self, text: str, columns: int, indent: str) -> str:
            if language == DEFAULT or base is argparse.RawDescriptionHelpFormatter:
                return str(super()._fill_text(text, columns, indent))
            flat = self._whitespace_matcher.sub(" ", text).strip()
            return "\n".join(indent + line for line in wrap(flat, columns - len(indent)))

    Localized.__name__ = Localized.__qualname__ = f"{base.__name__}_{language}"
    _FORMATTERS[language, base] = Localized
    return Localized


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every subcommand's parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases: once
                yield from parsers(sub)


def localize(parser: argparse.ArgumentParser, language: str) -> argparse.ArgumentParser:
    """Put argparse's own words of `parser` and its subcommands in `language`: the group
    titles, the `-h` help and the usage prefix (returns `parser`)."""
    for p in parsers(parser):
        for group in p._action_groups:
            if group.title in TITLES:
                group.title = tr(language, group.title)
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                action.help = tr(language, HELP)
        base = p.formatter_class
        if isinstance(base, type) and issubclass(base, argparse.HelpFormatter):
            p.formatter_class = formatter(language, base)
    return parser
