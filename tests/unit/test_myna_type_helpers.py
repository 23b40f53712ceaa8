"""Helpers for the Type A/D/custom session tests: cards loaded through GP, a recording link."""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _typed_host import C9_TYPE, MODULE, open_scp, secure

from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardap_sim.vcard.identity import generate_user_id
from cardap_sim.vcard.typea import TypeAApplet
from cardlib.gp.commands import (
    StoreDataEncryption,
    StoreDataOptions,
    dgi,
    install_for_install,
    install_for_load,
    install_parameters,
    load_commands,
    load_file_data_block,
    max_block_size,
    store_data_commands,
)
from cardlib.gp.primitives import pad80
from cardlib.protocol import ApduProtocol
from cardlib.tlv import encode_tlv

PROFILES = ("vendor-a", "vendor-b")
ACCESS_KEY = bytes(range(0x10, 0x20))
ACCESS_KEY_32 = bytes(range(0x40, 0x60))
PIN = b"1234"
EXT = bytes.fromhex("A000000151455854")
Tamper = Callable[[bytes, bytes], bytes]


@dataclass(frozen=True)
class Ap:
    """One loaded instance and what the card holds for it."""

    kind: str
    aid: bytes
    user_id: str
    info1: bytes = b""
    info2: bytes = b""
    access_key: bytes = ACCESS_KEY
    pin: bytes = PIN
    tries: int = 3
    content: bytes = b""


def make_ap(kind: str, n: int = 1, *, seed: int = 1, **kw: object) -> Ap:
    """A standard instance of `kind` (118-byte infos for A/D) with a valid random user ID."""
    rng = random.Random(seed * 100 + n)
    uid = generate_user_id(rng)
    aid = MODULE[kind] + bytes((n, 0x01))
    infos = (rng.randbytes(118), rng.randbytes(118)) if kind in ("A", "D") else (b"", b"")
    content = b""
    if kind == "custom":
        content = b"\x00\xFF" + encode_tlv(0x5F20, b"ORG") + encode_tlv(0xC1, uid.encode()) \
            + bytes(20)
    return Ap(kind, aid, uid, infos[0], infos[1], content=content, **kw)  # type: ignore[arg-type]


def _user_data(ap: Ap) -> bytes:
    """DGI 0101 value for the instance."""
    if ap.kind == "custom":
        return ap.content
    return (encode_tlv(0xC1, ap.user_id.encode()) + encode_tlv(0xC2, ap.info1)
            + encode_tlv(0xC3, ap.info2))


def load(card: VirtualCard, ap: Ap) -> None:
    """Load, install and personalise `ap` through SCP03 with the dev master keys."""
    session = open_scp(card)
    block = max_block_size(card.profile.max_command_data, session.level)
    load_file = bytes.fromhex("D392F0004C") + ap.aid[-2:] + bytes((ord(ap.kind[0]),))
    cmds = [install_for_load(load_file, EXT)]
    cmds += load_commands(load_file_data_block(secrets.token_bytes(64)), block)
    cmds.append(install_for_install(load_file, MODULE[ap.kind], ap.aid,
                                    parameters=install_parameters(bytes((C9_TYPE[ap.kind],)))))
    data = dgi(0x0101, _user_data(ap))
    options = StoreDataOptions()
    if ap.kind in ("A", "D"):
        data += dgi(0x8101, session.encrypt_sensitive(pad80(ap.access_key)))
        data += dgi(0x8102, session.encrypt_sensitive(pad80(ap.pin)))
        data += dgi(0x0103, bytes((ap.tries,)))
        options = StoreDataOptions(encryption=StoreDataEncryption.ENCRYPTED)
    cmds += store_data_commands(data, block, options=options)
    for cmd in cmds:
        assert secure(card, session, cmd).sw == 0x9000


def make_card(profile: str, *aps: Ap, serial: int = 7) -> VirtualCard:
    """A powered card (no card file) with `aps` loaded."""
    card = VirtualCard.create(profile=profile, serial=serial)
    card.power_on()
    for ap in aps:
        load(card, ap)
    card.power_off()
    card.power_on()
    return card


def card_tries(card: VirtualCard, ap: Ap) -> int:
    """The AP PIN counter as the card holds it."""
    applet = card.applets[ap.aid]
    assert isinstance(applet, TypeAApplet)
    assert applet.pin is not None
    return applet.pin.tries


def set_tries(card: VirtualCard, ap: Ap, tries: int) -> None:
    """Set the AP PIN counter on the card (deliberate blocking / reset at the municipality)."""
    applet = card.applets[ap.aid]
    assert isinstance(applet, TypeAApplet)
    assert applet.pin is not None
    applet.pin.tries = tries


class Link(InProcessConnection):
    """InProcessConnection recording what the card answered, with an optional response tamperer."""

    def __init__(self, card: VirtualCard, tamper: Tamper | None = None) -> None:
        super().__init__(card)
        self.tamper = tamper
        self.answered: list[tuple[bytes, bytes]] = []

    def transmit(self, apdu: bytes) -> bytes:
        """Transmit; record (command, response as the card sent it); maybe tamper."""
        resp = super().transmit(apdu)
        self.answered.append((bytes(apdu), resp))
        return resp if self.tamper is None else self.tamper(bytes(apdu), resp)

    def pin_verifies(self) -> int:
        """VERIFYs the card processed that carried a PIN (plain data, or an SM DO87)."""
        count = 0
        for cmd, _ in self.answered:
            if len(cmd) > 5 and cmd[1] == 0x20:
                count += cmd[0] == 0x00 or (cmd[0] == 0x0C and cmd[5] == 0x87)
        return count

    def ins_sent(self, ins: int) -> int:
        """How many answered commands had this INS."""
        return sum(1 for cmd, _ in self.answered if len(cmd) > 1 and cmd[1] == ins)


def connect(card: VirtualCard, tamper: Tamper | None = None) -> tuple[ApduProtocol, Link]:
    """A protocol over a recording link to `card` (powered on if needed)."""
    link = Link(card, tamper)
    return ApduProtocol(link, logger=logging.getLogger("test.myna.types")), link


@pytest.mark.parametrize("profile", PROFILES)
def test_helpers_load_every_kind(profile: str) -> None:
    aps = [make_ap("A"), make_ap("D"), make_ap("custom"), make_ap("A", 2, access_key=ACCESS_KEY_32)]
    card = make_card(profile, *aps)
    for ap in aps:
        assert ap.aid in card.applets
    assert card_tries(card, aps[0]) == 3
