"""The texts for people in the caller's language, the codes the same in every language.

A stack whose `[daemon] language` is "ja" (the shipped default): a call that names no
language gets Japanese, `accept-language: en` English; the check and next-action codes do
not change with the language. cardapctl speaks the language of LANG.
"""

from __future__ import annotations

import json
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


def test_cardapctl_speaks_japanese_in_every_command_and_json_stays_codes(
        ja_stack: Stack) -> None:
    """readers, watch, read-id, aps, operators, rights, presets, status and the client-side
    errors in Japanese under LANG=ja_JP.UTF-8, in today's English under C.UTF-8; the
    English first line of an error is the same in both, `--json` is the same in both."""
    sockets: Path = ja_stack.socket_dir
    insert_and_wait(ja_stack, 0, ja_stack.demo_card("lang-cli"))
    try:
        def both(*args: str, code: int = 0) -> tuple[str, str, str, str]:
            ja = cardapctl(sockets, *args, lang="ja_JP.UTF-8")
            en = cardapctl(sockets, *args)
            assert (ja.returncode, en.returncode) == (code, code), (ja.stderr, en.stderr)
            return ja.stdout, en.stdout, ja.stderr, en.stderr

        ja, en, _, _ = both("readers")
        assert "0  Virtual PCD 00 00  マイナンバーカード " in ja
        assert "1  Virtual PCD 00 01  カードなし" in ja
        assert "0  Virtual PCD 00 00  My Number Card " in en
        assert "1  Virtual PCD 00 01  empty" in en

        ja, en, _, _ = both("watch", "--count", "3")
        assert "SNAPSHOT      カードリーダー 'Virtual PCD 00 01': カードなし" in ja
        assert "SNAPSHOT_END  現在の状態は以上です。以降は起きた順に表示します" in ja
        assert "SNAPSHOT      reader 'Virtual PCD 00 01': empty" in en
        assert "SNAPSHOT_END  end of the snapshot; live events follow" in en

        ja, en, _, _ = both("read-id", "--reader", "0", "--fresh")
        assert "（カード " in ja
        assert "、カードリーダー 'Virtual PCD 00 00'、" in ja
        assert ja.rstrip().endswith("、その場で読み取り）"), ja
        assert ", reader 'Virtual PCD 00 00', AP " in en
        assert en.rstrip().endswith(", read now)"), en

        ja, en, _, _ = both("aps", "--reader", "0")
        heading_ja, heading_en = ja.splitlines()[0], en.splitlines()[0]
        assert heading_ja.split() == ["AID", "種別", "領域", "状態"]
        assert heading_en.split() == ["AID", "TYPE", "AREA", "STATE"]
        # a wide heading takes two columns: the columns line up as in English
        assert heading_ja.index("種別") == heading_en.index("TYPE")
        assert ja.splitlines()[-1].startswith("空き容量: ")
        assert " バイト" in ja
        assert en.splitlines()[-1].startswith("free: ")
        assert " bytes" in en

        ja, en, _, _ = both("operators", "list")
        assert (ja.strip(), en.strip()) == ("操作者がいません", "no operators")

        for command in (("rights", "show"), ("presets", "list")):
            ja, en, _, _ = both(*command, "--org", "org-a")
            assert ja.splitlines() == [
                "org-a: 操作者は搭載サービスにある団体のカタログのすべてのカードAPを搭載・削除"
                "できます（制限なし）", "既定のプリセットはありません"]
            assert en.splitlines() == [
                "org-a: operators may load and delete every AP of the organisation's "
                "catalogue at the loading service (not restricted)", "no default preset"]
            ja_json = cardapctl(sockets, "--json", *command, "--org", "org-a",
                                lang="ja_JP.UTF-8")
            assert ja_json.stdout == cardapctl(sockets, "--json", *command, "--org",
                                               "org-a").stdout
            assert json.loads(ja_json.stdout)["organisation"] == "org-a"

        ja, en, _, _ = both("status")
        assert "  搭載サービス: 未設定" in ja
        assert "  指紋センサー: 使用不可" in ja
        assert "  loading service: not configured" in en
        assert "  fingerprint device: unavailable" in en

        # client-side errors: the English line for scripts, then the user's language
        _, _, ja, en = both("aps", "--reader", "9", code=2)
        english = ("cardapctl: CLIENT_ERROR: there is no reader 9 (0: Virtual PCD 00 00; "
                   "1: Virtual PCD 00 01)")
        assert ja.splitlines()[0] == en.splitlines()[0] == english
        assert ja.splitlines()[1] == ("cardapctl: カードリーダー 9 はありません（0: Virtual PCD "
                                      "00 00; 1: Virtual PCD 00 01）")
        _, _, ja, en = both("delete", "--aid", "ZZ", "--reason", "holder_request", code=2)
        assert ja.splitlines()[0] == en.splitlines()[0] == (
            "cardapctl: CLIENT_ERROR: --aid 'ZZ' is not hexadecimal")
        assert ja.splitlines()[1] == "cardapctl: --aid 'ZZ' は16進数ではありません"
        _, _, ja, en = both("delete", "--aid", "D3921000310001", "--reader", "0", "--reason",
                            "holder_request", code=2)  # stdin is no terminal: not confirmed
        assert ja.splitlines()[0] == en.splitlines()[0]
        assert en.splitlines()[0].startswith("cardapctl: CLIENT_ERROR: Delete AP "
                                             "D3921000310001 from card ")
        assert ja.splitlines()[1].startswith("cardapctl: カードリーダー 'Virtual PCD 00 00' の"
                                             "カード ")
        assert "のAP D3921000310001を削除しますか: 確認が取れないため実行しません。" in ja
    finally:
        ja_stack.control.remove(0)
