"""`--help` of cardapctl and cardapd in the user's language (issue 18): Japanese under a
Japanese locale, English otherwise, from the catalogues; option names, metavars and
commands untranslated; the manual pages' parsers English whatever the locale; completion
unchanged under a Japanese locale."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import completion
import pytest

from cardap import cli, clihelp
from cardapd import bootstrap_admin
from cardapd import main as daemon_main

BIN = Path(sys.executable).parent
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
JA = {"LANG": "ja_JP.UTF-8"}
C = {"LANG": "C"}


def run(program: str, *args: str, locale: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed console script, with only `locale` saying the language."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    env.update(locale, COLUMNS="100")
    return subprocess.run([str(BIN / program), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


# command, (Japanese texts, English texts), options and metavars in both
CASES = [
    (["cardapctl"],
     ("使い方: cardapctl", "共通オプション", "カードの障害切り分け", "終了コード:", "引数:"),
     ("usage: cardapctl", "global options", "card fault isolation", "Exit codes:",
      "positional arguments:"),
     ("--json", "--timeout SECONDS", "COMMAND", "OUTPUT_CLOSED", "$CARDAPD_SOCKET_DIR")),
    (["cardapctl", "load"],
     ("使い方: cardapctl load", "カードAPまたはプリセットをカードに搭載する",
      "このヘルプを表示して終了する", "オプション:", "13文字の利用者ID"),
     ("usage: cardapctl load", "Load an AP or a preset set onto the card",
      "show this help message and exit", "options:", "13-character user ID"),
     ("--ap AP_ID", "--preset NAME", "--custom-user-id ID", "`cardapctl loadable`")),
    (["cardapctl", "operators", "add"],
     ("操作者を追加する。", "表示名（既定: 操作者ID）", "カンマ区切り"),
     ("Add an operator.", "display name (default: the operator ID)", "comma-separated"),
     ("--org ORG", "--operator ID", "--rights RIGHTS", "load,delete,diagnose")),
    (["cardapctl", "audit", "export"],
     ("操作記録の行を JSON Lines または CSV で書き出す。", "モード 0600"),
     ("Export audit rows as JSON Lines or CSV.", "mode 0600"),
     ("--format {jsonl,csv}", "--since WHEN", "--out FILE")),
    (["cardapctl", "delete"],
     ("本人の申し出", "操作記録に残り"),
     ("the holder asked", "kept in the audit log"),
     ("--reason {holder_request,card_renewal,other}", "--reason-detail TEXT", "--yes, -y")),
    (["cardapd"],
     ("使い方: cardapd", "マイナンバーカードのカードAP搭載端末", "設定ファイル",
      "団体の最初の管理者を任命する"),
     ("usage: cardapd", "The daemon of My Number Card AP loading terminals",
      "configuration file", "appoint the first administrator"),
     ("--check-config", "--log-level {traffic,debug,info,warning,error}",
      "/etc/cardapd/cardapd.toml", "cardapd bootstrap-admin --help")),
    (["cardapd", "bootstrap-admin"],
     ("使い方: cardapd bootstrap-admin", "団体の最初の管理者を任命します", "今は指紋を登録しない"),
     ("usage: cardapd bootstrap-admin", "Appoint the first administrator",
      "do not enrol a finger now"),
     ("--organisation ORGANISATION", "--enroll FINGER", "--replace-session",
      "load,delete,diagnose", "[operators.organisations]")),
]


@pytest.mark.parametrize(("command", "ja", "en", "kept"), CASES,
                         ids=[" ".join(c[0]) for c in CASES])
def test_help_is_japanese_under_a_japanese_locale_and_english_otherwise(
        command: list[str], ja: tuple[str, ...], en: tuple[str, ...],
        kept: tuple[str, ...]) -> None:
    program, *args = command
    japanese = run(program, *args, "--help", locale=JA)
    english = run(program, *args, "--help", locale=C)
    assert japanese.returncode == english.returncode == 0, japanese.stderr + english.stderr
    for text in ja:
        assert text in japanese.stdout, (text, japanese.stdout)
    for text in en:
        assert text in english.stdout, (text, english.stdout)
        assert text not in japanese.stdout, text
    assert not JAPANESE.search(english.stdout), english.stdout
    for text in kept:  # option names, metavars, choices, codes and commands stay as typed
        assert text in japanese.stdout, text
        assert text in english.stdout, text


def test_the_language_follows_language_before_lang() -> None:
    """gettext's order: LANGUAGE, LC_ALL, LC_MESSAGES, LANG (`cardap.i18n`)."""
    assert "使い方:" in run("cardapctl", "--help",
                          locale={"LANG": "en_US.UTF-8", "LANGUAGE": "ja"}).stdout
    assert "usage:" in run("cardapctl", "--help",
                           locale={"LANG": "ja_JP.UTF-8", "LC_ALL": "C.UTF-8"}).stdout


def texts(p: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(where, text) of every text for people a parser and its subcommands show."""
    out: list[tuple[str, str]] = []
    for sub in clihelp.parsers(p):
        out += [(f"{sub.prog} description", sub.description or "")] if sub.description \
            else []
        out += [(f"{sub.prog} group", g.title or "") for g in sub._action_groups
                if g._group_actions]
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                out += [(f"{sub.prog} {c.dest}", c.help or "") for c in action._choices_actions]
            elif action.help != argparse.SUPPRESS:
                out.append((f"{sub.prog} {'/'.join(action.option_strings) or action.dest}",
                            action.help or ""))
    return out


@pytest.mark.parametrize("build", [cli.build_parser, daemon_main.build_parser,
                                   bootstrap_admin.build_parser],
                         ids=["cardapctl", "cardapd", "cardapd bootstrap-admin"])
def test_every_text_of_every_parser_is_said_in_japanese(build: object) -> None:
    """A help text not marked for translation would stay English under a Japanese locale."""
    assert callable(build)
    english = [where for where, text in texts(build("ja"))
               if not JAPANESE.search(text)]
    assert not english, "not translated: " + "; ".join(english)
    japanese = [where for where, text in texts(build("en")) if JAPANESE.search(text)]
    assert not japanese, japanese


def test_the_manual_parsers_are_english_whatever_the_locale(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGUAGE", "ja")
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    assert JAPANESE.search(cli.build_parser().format_help())  # the user's parser follows it
    for p in (cli.manual_parser(), daemon_main.manual_parser()):
        for where, text in texts(p):
            assert not JAPANESE.search(text), where
        assert p.format_help().startswith("usage: ")


def test_japanese_is_wrapped_by_terminal_columns_and_never_breaks_before_punctuation(
        ) -> None:
    text = "カードAPまたはプリセットをカードに搭載する。進み具合を表示（kiosk、操作者セッション）"
    for columns in range(10, 60):
        lines = clihelp.wrap(text, columns)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        for line in lines:
            # one character of kinsoku may run over
            assert clihelp.width(line) <= columns + 2, (columns, line)
        for line in lines[1:]:
            assert line[0] not in clihelp.NO_LINE_START, (columns, lines)
        for line in lines[:-1]:
            assert line[-1] not in clihelp.NO_LINE_END, (columns, lines)
    assert clihelp.wrap("--ap AP_ID の `cardapctl loadable` を参照", 12) == [
        "--ap AP_ID", "の", "`cardapctl", "loadable` を", "参照"]  # words stay whole


def test_a_wrapped_japanese_usage_keeps_its_columns() -> None:
    """argparse indents usage continuation lines by the prefix's length; 使い方 is wider
    than it is long."""
    usage = cli.build_parser("ja")._subparsers._group_actions[0].choices["load"] \
        .format_usage()  # type: ignore[union-attr]
    first, second = usage.splitlines()[:2]
    assert first.startswith("使い方: cardapctl load [")
    bracket = clihelp.width(first[:first.index("[")])
    assert second.index("[") == bracket, usage


def complete(line: str, locale: dict[str, str]) -> list[str]:
    """What bash completion offers for `line` (argcomplete, as users get it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL")}
    env.update(locale, PATH=f"{BIN}:{os.environ['PATH']}")
    return completion.complete(BIN / "cardapctl", line, env)


@pytest.mark.parametrize("locale", [JA, C], ids=["ja", "C"])
def test_completion_is_the_same_in_every_language(locale: dict[str, str]) -> None:
    assert "delete" in complete("cardapctl de", locale)
    assert complete("cardapctl load --pre", locale) == ["--preset"]
    assert set(complete("cardapctl operators a", locale)) == {"add", "appoint-admin"}
    assert complete("cardapctl audit export --format ", locale) == ["jsonl", "csv"]
