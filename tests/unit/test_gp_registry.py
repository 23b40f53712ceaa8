"""GET STATUS: command bytes, TLV and legacy parsing, 6310 continuation, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardlib.apdu import CommandApdu, ResponseApdu
from cardlib.errors import CardProtocolError, StatusWordError
from cardlib.gp.registry import (
    EntryKind,
    RegistryEntry,
    Scope,
    get_status,
    lifecycle_name,
    parse_get_status,
    read_registry,
)
from cardlib.tlv import encode_tlv

h = bytes.fromhex
ISD = "A000000151000000"
APP = "D392F00043010001"


def e3(inner: str) -> bytes:
    """One E3 registry template around the hex TLVs in `inner` (spaces allowed)."""
    return encode_tlv(0xE3, h(inner.replace(" ", "")))


@pytest.mark.parametrize(("scope", "tlv", "nxt", "expected"), [
    (Scope.ISD, True, False, "80F28002024F0000"),
    (Scope.APPLICATIONS, True, False, "80F24002024F0000"),
    (Scope.LOAD_FILES, False, False, "80F22000024F0000"),
    (Scope.LOAD_FILES_AND_MODULES, True, True, "80F21003024F0000"),
    (Scope.APPLICATIONS, False, True, "80F24001024F0000"),
])
def test_get_status_bytes(scope: Scope, tlv: bool, nxt: bool, expected: str) -> None:
    assert get_status(scope, tlv=tlv, next_=nxt).encode() == h(expected)


def test_get_status_with_aid_prefix() -> None:
    assert get_status(Scope.APPLICATIONS, aid_prefix=h("D392F0")).encode() == h(
        "80F2400205 4F03D392F0 00".replace(" ", ""))


def test_parse_tlv_isd() -> None:
    data = e3(f"4F08{ISD} 9F70010F C5039EFE80")
    [entry] = parse_get_status(Scope.ISD, data, tlv=True)
    assert entry == RegistryEntry(h(ISD), 0x0F, h("9EFE80"), EntryKind.ISD)
    assert entry.state == "SECURED"


def test_parse_tlv_applications_and_sd() -> None:
    data = (e3(f"4F08{APP} 9F700107 C503000000 CC08{ISD}")
            + e3(f"4F08A000000151535041 9F70010F C503800000 CC08{ISD}"))
    app, sd = parse_get_status(Scope.APPLICATIONS, data, tlv=True)
    assert (app.kind, app.state, app.associated_sd) == (EntryKind.APPLICATION, "SELECTABLE",
                                                        h(ISD))
    assert (sd.kind, sd.state, sd.is_security_domain) == (EntryKind.SECURITY_DOMAIN,
                                                          "PERSONALIZED", True)


def test_parse_tlv_load_files_with_modules() -> None:
    data = e3("4F06D392F0004301 9F700101 CE020100 CC08A000000151000000"
              "84 08 D392F00043010001")
    [lf] = parse_get_status(Scope.LOAD_FILES_AND_MODULES, data, tlv=True)
    assert lf.kind is EntryKind.LOAD_FILE
    assert lf.state == "LOADED"
    assert lf.modules == (h("D392F00043010001"),)
    assert lf.aid == h("D392F0004301")
    assert lf.version == h("0100")
    assert lf.privileges == b""


def test_parse_legacy_forms() -> None:
    apps = h(f"08{APP}0700 08A0000001515350410F80".replace(" ", ""))
    a, b = parse_get_status(Scope.APPLICATIONS, apps, tlv=False)
    assert (a.aid, a.lifecycle, a.privileges, a.kind) == (h(APP), 7, b"\x00",
                                                          EntryKind.APPLICATION)
    assert b.kind is EntryKind.SECURITY_DOMAIN
    mods = h("06D392F0004301 01 00 02 08D392F00043010001 08D392F00043010002".replace(" ", ""))
    [lf] = parse_get_status(Scope.LOAD_FILES_AND_MODULES, mods, tlv=False)
    assert lf.modules == (h("D392F00043010001"), h("D392F00043010002"))
    [isd] = parse_get_status(Scope.ISD, h(f"08{ISD}0F9E"), tlv=False)
    assert isd.state == "SECURED"


@pytest.mark.parametrize(("value", "kind", "name"), [
    (0x01, EntryKind.ISD, "OP_READY"), (0x07, EntryKind.ISD, "INITIALIZED"),
    (0x7F, EntryKind.ISD, "CARD_LOCKED"), (0xFF, EntryKind.ISD, "TERMINATED"),
    (0x03, EntryKind.APPLICATION, "INSTALLED"), (0x83, EntryKind.APPLICATION, "LOCKED"),
    (0x87, EntryKind.APPLICATION, "LOCKED"), (0x0F, EntryKind.APPLICATION,
                                               "APPLICATION_SPECIFIC_0F"),
    (0x01, EntryKind.LOAD_FILE, "LOADED"), (0x42, EntryKind.APPLICATION, "UNKNOWN_42"),
])
def test_lifecycle_names(value: int, kind: EntryKind, name: str) -> None:
    assert lifecycle_name(kind, value) == name


@pytest.mark.parametrize(("scope", "raw", "tlv"), [
    (Scope.ISD, "E3054F03A00000", True),  # AID too short
    (Scope.ISD, f"E30C4F08{ISD}9F7000", True),  # empty lifecycle (also truncated)
    (Scope.ISD, f"E30A4F08{ISD}", True),  # no lifecycle
    (Scope.ISD, f"E3134F08{ISD}4F08{ISD}9F70010F", True),  # duplicate AID
    (Scope.ISD, f"6F0D4F08{ISD}9F70010F", True),  # not E3
    (Scope.ISD, f"E30F4F08{ISD}9F70010FC5029EFE", True),  # 2-byte privileges
    (Scope.APPLICATIONS, f"E3154F08{ISD}9F70010784{'08' + ISD}", True),  # modules here
    (Scope.APPLICATIONS, f"08{ISD}07", False),  # truncated privileges
    (Scope.LOAD_FILES_AND_MODULES, f"08{ISD}010002 08{ISD}".replace(" ", ""), False),
    (Scope.APPLICATIONS, "110000000000000000000000000000000000000700", False),  # 17-byte AID
])
def test_malformed_answers_are_protocol_errors(scope: Scope, raw: str, tlv: bool) -> None:
    with pytest.raises(CardProtocolError):
        parse_get_status(scope, h(raw), tlv=tlv)




def test_read_registry_follows_6310() -> None:
    first = e3(f"4F08{APP}9F700107C503000000")
    second = e3(f"4F08{ISD}9F70010FC503800000")
    sent: list[CommandApdu] = []
    answers = [ResponseApdu(first, 0x6310), ResponseApdu(second, 0x9000)]

    def send(cmd: CommandApdu) -> ResponseApdu:
        sent.append(cmd)
        return answers[len(sent) - 1]

    entries = read_registry(send, Scope.APPLICATIONS)
    assert [e.aid for e in entries] == [h(APP), h(ISD)]
    assert [c.p2 for c in sent] == [0x02, 0x03]


def test_read_registry_empty_and_errors() -> None:
    assert read_registry(lambda c: ResponseApdu(b"", 0x6A88), Scope.LOAD_FILES) == []
    with pytest.raises(StatusWordError):
        read_registry(lambda c: ResponseApdu(b"", 0x6982), Scope.ISD)
    with pytest.raises(CardProtocolError, match="6310"):
        read_registry(lambda c: ResponseApdu(b"", 0x6310), Scope.ISD)
    endless = e3(f"4F08{ISD}9F70010FC503800000")
    with pytest.raises(CardProtocolError, match="rounds"):
        read_registry(lambda c: ResponseApdu(endless, 0x6310), Scope.ISD)


def test_6a88_after_6310_is_an_error() -> None:
    answers = iter([ResponseApdu(h(f"08{ISD}0F9E"), 0x6310), ResponseApdu(b"", 0x6A88)])
    with pytest.raises(StatusWordError):
        read_registry(lambda c: next(answers), Scope.ISD, tlv=False)


@settings(max_examples=400, deadline=None)
@given(scope=st.sampled_from(list(Scope)), tlv=st.booleans(), raw=st.binary(max_size=80))
def test_parsers_raise_only_protocol_errors(scope: Scope, tlv: bool, raw: bytes) -> None:
    try:
        entries = parse_get_status(scope, raw, tlv=tlv)
    except CardProtocolError:
        return
    for e in entries:
        assert 5 <= len(e.aid) <= 16
        assert isinstance(e.state, str)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=5, max_size=16), st.integers(0, 255),
                          st.integers(0, 255)), max_size=8))
def test_legacy_round_trip(items: list[tuple[bytes, int, int]]) -> None:
    raw = b"".join(bytes((len(a),)) + a + bytes((lc, pr)) for a, lc, pr in items)
    parsed = parse_get_status(Scope.APPLICATIONS, raw, tlv=False)
    assert [(e.aid, e.lifecycle, e.privileges[0]) for e in parsed] == items
