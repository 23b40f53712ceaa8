"""The texts for people in the caller's language, the codes the same in every language.

A stack whose `[daemon] language` is "ja" (the shipped default): a call that names no
language gets Japanese, `accept-language: en` English; the check and next-action codes do
not change with the language. cardapctl speaks the language of LANG.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cardap.client import CardapClient
from cardap.i18n import tr
from cardap.v1 import terminal_pb2
from cardap_sim.stack import Stack
from cardapd.readers.diagnose import ACTION_NO_CARD, CHECK_TITLES, CheckCode

from .conftest import cardapctl, insert_and_wait, reader_name


@pytest.fixture(scope="module")
def ja_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("lang") / "stack", language="ja")
    try:
        yield s.start()
    finally:
        s.stop()


def diagnose(stack: Stack, reader: str, language: str | None
             ) -> terminal_pb2.DiagnoseResponse:
    with CardapClient(stack.socket("ops"), timeout=10.0, language=language) as c:
        return c.diagnose(reader)


def test_diagnose_in_the_configured_and_the_asked_language(ja_stack: Stack) -> None:
    reader = reader_name(ja_stack, 1)  # empty: NO_CARD
    default, english = diagnose(ja_stack, reader, None), diagnose(ja_stack, reader, "en")
    japanese = diagnose(ja_stack, reader, "ja-JP, en;q=0.5")
    assert (default.language, english.language, japanese.language) == ("ja", "en", "ja")
    assert english.next_action == ACTION_NO_CARD
    assert default.next_action == japanese.next_action == tr("ja", ACTION_NO_CARD)
    assert "カードを挿入し" in default.next_action
    for resp in (default, english, japanese):
        assert resp.verdict == terminal_pb2.VERDICT_NO_CARD
        assert resp.next_action_code == terminal_pb2.NEXT_ACTION_CODE_INSERT_CARD
    card = {c.name: c for c in english.readers[0].checks}["card"]
    card_ja = {c.name: c for c in default.readers[0].checks}["card"]
    assert (card.code, card_ja.code) == (terminal_pb2.CHECK_CODE_CARD,) * 2
    assert (card.detail, card.title) == ("no card in the reader", "card in the reader")
    assert (card_ja.detail, card_ja.title) == ("カードが挿入されていません",
                                               tr("ja", CHECK_TITLES[CheckCode.CARD]))
    assert (english.verdict_text, default.verdict_text) == ("no card", "カードなし")


def test_a_card_checks_in_japanese_with_their_values(ja_stack: Stack) -> None:
    insert_and_wait(ja_stack, 0, ja_stack.demo_card("lang"))
    try:
        resp = diagnose(ja_stack, reader_name(ja_stack, 0), "ja")
        english = diagnose(ja_stack, reader_name(ja_stack, 0), "en")
    finally:
        ja_stack.control.remove(0)
    diag = resp.readers[0]
    assert diag.verdict == terminal_pb2.VERDICT_OK, diag
    assert diag.next_action_code == terminal_pb2.NEXT_ACTION_CODE_NONE
    assert diag.next_action == "対応は不要です。カードリーダーとカードは正常に動作しています。"
    tries = {c.name: c for c in diag.checks}["jpki.auth_pin_tries"]
    assert tries.code == terminal_pb2.CHECK_CODE_JPKI_AUTH_PIN_TRIES
    assert tries.detail == "利用者証明用暗証番号の残り回数は3回です（回数は消費していません）"
    assert dict(tries.values) == {"which": "authentication PIN", "n": "3"}
    en_tries = {c.name: c for c in english.readers[0].checks}["jpki.auth_pin_tries"]
    assert en_tries.detail == "3 tries left on the authentication PIN (none spent)"
    assert [c.code for c in diag.checks] == [c.code for c in english.readers[0].checks]


def test_cardapctl_speaks_the_language_of_lang(ja_stack: Stack) -> None:
    sockets: Path = ja_stack.socket_dir
    reader = reader_name(ja_stack, 1)
    ja = cardapctl(sockets, "diagnose", "--reader", reader, lang="ja_JP.UTF-8")
    assert ja.returncode == 13, ja.stderr  # NO_CARD, whatever the language
    assert "カードなし (NO_CARD)" in ja.stdout
    assert "[異常] カードの挿入: カードが挿入されていません" in ja.stdout
    assert tr("ja", ACTION_NO_CARD) in ja.stdout
    en = cardapctl(sockets, "diagnose", "--reader", reader)
    assert en.returncode == 13
    assert "[FAIL] card: no card in the reader" in en.stdout
    assert ACTION_NO_CARD in en.stdout
    status = cardapctl(sockets, "status", lang="ja_JP.UTF-8")
    assert status.returncode == 0, status.stderr
    assert "操作記録の行数" in status.stdout
    assert "カードリーダー:" in status.stdout
    as_json = cardapctl(sockets, "--json", "diagnose", "--reader", reader, lang="ja_JP.UTF-8")
    assert '"next_action_code": "NEXT_ACTION_CODE_INSERT_CARD"' in as_json.stdout
