"""The 13-byte user ID as the card holds it: the rule, the text form, the org's format."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardapd.errors import CardDataInvalid
from cardapd.myna.userid import (
    DEFAULT_RULE,
    UserIdFormatError,
    UserIdRule,
    is_user_id_text,
    raw_from_text,
    text_form,
)


@pytest.mark.parametrize("raw", [b"ZZZZ0000ZZZZ0", b"1234567890128", b"a b-c.d_e!f~g",
                                 b"IOIOIOIOIOIOI", b"             "])
def test_any_printable_id_is_taken_as_it_is(raw: bytes) -> None:
    # No alphabet and no check character: the public sources give none (D49).
    assert DEFAULT_RULE.decode(raw, "Type C AP") == raw.decode("ascii")


@pytest.mark.parametrize("raw", [b"\x00" * 13, b"ABCDEFGHIJKL\x7f", "ÄBCDEFGHIJKL".encode()[:13]])
def test_printable_rule_refuses_other_bytes(raw: bytes) -> None:
    with pytest.raises(CardDataInvalid, match="not printable"):
        DEFAULT_RULE.decode(raw, "Type C AP")


@pytest.mark.parametrize("raw", [b"", b"ABCDEFGHIJKL", b"ABCDEFGHIJKLMN"])
def test_length_is_always_13(raw: bytes) -> None:
    for rule in (DEFAULT_RULE, UserIdRule("binary")):
        with pytest.raises(CardDataInvalid, match="13"):
            rule.decode(raw, "x")


def test_binary_rule_gives_hex_text() -> None:
    raw = bytes(range(13))
    text = UserIdRule("binary").decode(raw, "custom AP")
    assert text == "0x000102030405060708090A0B0C"
    assert raw_from_text(text) == raw
    # a printable ID read under the binary rule keeps its characters
    assert UserIdRule("binary").decode(b"ABCDEFGHIJKLM", "x") == "ABCDEFGHIJKLM"


def test_organisation_format_is_opt_in() -> None:
    rule = UserIdRule(pattern=re.compile(r"[A-Z]{4}[0-9]{9}"), organisation="org-a")
    assert rule.decode(b"ABCD123456789", "x") == "ABCD123456789"
    with pytest.raises(UserIdFormatError) as info:
        rule.decode(b"ZZZZ0000ZZZZ0", "Type C AP")
    assert info.value.reason == "USER_ID_FORMAT"
    assert info.value.metadata == {"organisation": "org-a"}


@given(st.binary(min_size=13, max_size=13))
def test_text_form_round_trips(raw: bytes) -> None:
    text = text_form(raw)
    assert is_user_id_text(text)
    assert raw_from_text(text) == raw


@given(st.text(max_size=30))
def test_text_check_never_raises(s: str) -> None:
    is_user_id_text(s)


@pytest.mark.parametrize("text", ["", "ABC", "ABCDEFGHIJKLMN", "0x00", "0x" + "g" * 26,
                                  "0x" + "ab" * 13, "ÄBCDEFGHIJKLM", "ABCDEFGHIJKL\n"])
def test_not_user_id_texts(text: str) -> None:
    assert not is_user_id_text(text)
