"""The 13-character user ID and its check character."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardapd.myna.userid import ALPHABET, check_char, generate_user_id, validate_user_id


def test_alphabet() -> None:
    assert len(ALPHABET) == 34
    assert "I" not in ALPHABET
    assert "O" not in ALPHABET


def test_check_char_by_hand() -> None:
    # "000000000001": only i=11 contributes (11+1)*1 = 12 → ALPHABET[12] = "C".
    assert check_char("000000000001") == "C"
    # "Z" (33) at i=0 → 33 → "Z"; at i=1 → 66 mod 34 = 32 → "Y".
    assert check_char("Z00000000000") == "Z"
    assert check_char("0Z0000000000") == "Y"
    assert check_char("000000000000") == "0"
    # Σ (i+1)·(i+1) for "123456789ABC" = 650 → 650 mod 34 = 4.
    assert check_char("123456789ABC") == "4"


@pytest.mark.parametrize("body", ["", "00000000000", "0000000000000", "00000000000I",
                                  "00000000000a"])
def test_check_char_rejects(body: str) -> None:
    with pytest.raises(ValueError, match="12 symbols"):
        check_char(body)


def test_validate() -> None:
    assert validate_user_id("123456789ABC4")
    assert not validate_user_id("123456789ABC5")
    assert not validate_user_id("123456789ABC")
    assert not validate_user_id("123456789abc4")
    assert not validate_user_id("123456789ABCO")


@given(st.integers())
def test_generated_ids_validate(seed: int) -> None:
    uid = generate_user_id(random.Random(seed))
    assert len(uid) == 13
    assert validate_user_id(uid)


@given(st.text(max_size=15))
def test_validate_never_raises(s: str) -> None:
    validate_user_id(s)


def test_single_substitution_detected_at_odd_weights() -> None:
    # Weights i+1 coprime to 34 catch every substitution; even weights miss a change of 17.
    uid = generate_user_id(random.Random(1))
    for i in range(12):
        if math.gcd(i + 1, 34) != 1:
            continue
        for c in ALPHABET:
            if c != uid[i]:
                assert not validate_user_id(uid[:i] + c + uid[i + 1:])
