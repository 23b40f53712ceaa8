"""Fingerprint prompts in the call's language: the code and figures stay, the words change."""

from __future__ import annotations

from cardapd.api.rpc_operators import prompt
from cardapd.operators.login import PasswordPrompt
from cardapd.operators.prompts import Prompt, PromptCode


def test_prompt_texts_in_english_and_japanese() -> None:
    place = Prompt(PromptCode.PLACE_FINGER)
    assert prompt(place, "en").message == "Place your finger on the sensor"
    assert prompt(place, "ja").message == "指をセンサーに置いてください"
    assert prompt(place, "ja").code == prompt(place, "en").code == "PLACE_FINGER"


def test_stage_and_scan_result_beside_the_text() -> None:
    stage = prompt(Prompt(PromptCode.ENROLL_STAGE, stage=2, stages=5), "ja")
    assert stage.message == "読み取りました。同じ指をもう一度置いてください (2/5)"
    assert (stage.stage, stage.stages) == (2, 5)
    retry = prompt(Prompt(PromptCode.RETRY_SCAN, reason="verify-swipe-too-short"), "ja")
    assert retry.scan_result == "verify-swipe-too-short"
    assert retry.message.startswith("読み取れませんでした")


def test_every_prompt_code_has_japanese() -> None:
    for code in PromptCode:
        en, ja = prompt(Prompt(code), "en").message, prompt(Prompt(code), "ja").message
        assert en != ja, code
    assert prompt(PasswordPrompt(), "ja").message == "パスワードを入力してください"
