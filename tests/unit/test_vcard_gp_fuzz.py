"""Virtual card ISD fuzz: random APDUs, in and out of a secure channel, only ever a status word."""

from __future__ import annotations

from pathlib import Path

from _typed_host import open_scp, send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardap_sim.vcard.card import VirtualCard
from cardlib.gp.commands import select

INS = st.sampled_from([0x50, 0x82, 0xCA, 0xE2, 0xE4, 0xE6, 0xE8, 0xF2, 0xA4, 0xC0, 0xB0, 0x20])
CLA = st.sampled_from([0x00, 0x80, 0x84, 0x0C, 0x04])


def apdus() -> st.SearchStrategy[bytes]:
    """Well-formed headers with arbitrary bodies, plus arbitrary byte strings."""
    header = st.tuples(CLA, INS, st.integers(0, 255), st.integers(0, 255))
    body = st.binary(max_size=260)
    structured = st.builds(lambda h, b: bytes(h) + b, header, body)
    lc_form = st.builds(lambda h, d: bytes(h) + bytes((len(d),)) + d + b"\x00", header,
                        st.binary(min_size=1, max_size=255))
    return st.one_of(structured, lc_form, st.binary(max_size=300))


def check(response: bytes) -> None:
    assert len(response) >= 2
    assert response[-2] in (0x61, 0x62, 0x63, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E,
                            0x90)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(apdus(), min_size=1, max_size=12), st.booleans(),
       st.sampled_from(["vendor-a", "vendor-b"]))
def test_random_apdus_answer_status_words(tmp_path: Path, seq: list[bytes], secure: bool,
                                          profile: str) -> None:
    card = VirtualCard.create(profile=profile, path=tmp_path / f"{profile}.json", serial=1)
    card.power_on()
    if secure:
        open_scp(card)
    else:
        assert send(card, select(card.isd.aid)).sw == 0x9000
    for raw in seq:
        check(card.transmit(raw))
