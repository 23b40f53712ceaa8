"""The vendor profile table: data, CPLC first, ATR fallback, unknown otherwise."""

from __future__ import annotations

import dataclasses

import pytest

from cardapd.errors import ConfigError
from cardapd.myna.cplc import parse_cplc
from cardapd.myna.profiles import load_profiles, parse_profiles, profile_for

ATR_A = bytes.fromhex("3BC5FF8131FB458073C6010000")
ATR_B = bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B")


def _cplc(fab: str) -> object:
    return parse_cplc(bytes.fromhex(fab) + bytes(40))


def test_table_matches_card_model() -> None:
    table = load_profiles()
    a, b = table.by_name("vendor-a"), table.by_name("vendor-b")
    assert (a.ic_fabricator, a.max_command_data, a.get_status_form, a.read_binary_eof,
            a.extended_area_size, a.atrs) == ("4790", 239, "tlv", "6282", 32768, (ATR_A,))
    assert (b.ic_fabricator, b.max_command_data, b.get_status_form, b.read_binary_eof,
            b.extended_area_size, b.atrs) == ("4250", 255, "legacy", "6C", 24576, (ATR_B,))
    assert not table.unknown.known
    assert a.known


def test_cplc_wins_over_atr() -> None:
    cplc = parse_cplc(bytes.fromhex("4250") + bytes(40))
    assert profile_for(cplc, ATR_A).name == "vendor-b"


def test_atr_is_fallback() -> None:
    assert profile_for(None, ATR_A).name == "vendor-a"
    unknown_fab = parse_cplc(bytes.fromhex("1234") + bytes(40))
    assert profile_for(unknown_fab, ATR_B).name == "vendor-b"


def test_unknown() -> None:
    p = profile_for(None, b"\x3b\x00")
    assert p.name == "unknown"
    assert p.max_command_data == 239
    with pytest.raises(KeyError):
        load_profiles().by_name("vendor-z")


def test_profile_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_profiles().unknown.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("text", [
    "[[profile]\n",
    '[[profile]]\nname = "x"\n[unknown]\nname = "u"\nmax_command_data = 1\n'
    'get_status_form = "legacy"\n',
    '[[profile]]\nname = "x"\nic_fabricator = "4790"\nmax_command_data = 300\n'
    'get_status_form = "tlv"\n[unknown]\nname = "u"\nmax_command_data = 1\n'
    'get_status_form = "legacy"\n',
    '[[profile]]\nname = "x"\nic_fabricator = "4790"\nmax_command_data = 3\n'
    'get_status_form = "odd"\n[unknown]\nname = "u"\nmax_command_data = 1\n'
    'get_status_form = "legacy"\n',
    '[[profile]]\nname = "u"\nic_fabricator = "4790"\nmax_command_data = 3\n'
    'get_status_form = "tlv"\n[unknown]\nname = "u"\nmax_command_data = 1\n'
    'get_status_form = "legacy"\n',
])
def test_invalid_tables(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_profiles(text)
