"""Secure channel strategies over a real ApduProtocol, against the card-side SCP03 session."""

from __future__ import annotations

import pytest

from cardlib.apdu import CommandApdu, ResponseApdu, parse_response
from cardlib.errors import CommandRejected, ResponseIntegrityError
from cardlib.gp.channel import PlainChannel, Scp03Channel, relay, send_ok
from cardlib.gp.commands import get_data, load_commands, max_block_size
from cardlib.gp.keys import DiversifyingKeyStore, StaticKeys
from cardlib.gp.registry import Scope, read_registry
from cardlib.gp.scp03 import Scp03CardSession, Scp03Session
from cardlib.protocol import ApduProtocol
from cardlib.tlv import encode_tlv

MASTER = StaticKeys(bytes(range(0x40, 0x50)), bytes(range(0x50, 0x60)),
                    bytes(range(0x60, 0x70)), kvn=0x30)
KDD = bytes.fromhex("4790000000001A2B3C4D")
ISD = bytes.fromhex("A000000151000000")


class EchoCard:
    """A CardConnection: SCP03 card side; secured commands are answered with their data reversed."""

    def __init__(self, *, tamper: bool = False) -> None:
        keys = DiversifyingKeyStore(MASTER).card_keys(KDD, 0x30)
        self.scp = Scp03CardSession(keys, kdd=KDD, isd_aid=ISD)
        self.tamper = tamper
        self.seen: list[CommandApdu] = []

    @property
    def atr(self) -> bytes:
        return bytes.fromhex("3BC5FF8131FB458073C6010000")

    def close(self) -> None:
        pass

    def transmit(self, apdu: bytes) -> bytes:
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        data = body[1:1 + body[0]] if len(body) > 1 else b""
        le = body[1 + body[0]:] if len(body) > 1 else body
        cmd = CommandApdu(cla, ins, p1, p2, data, (le[0] or 256) if le else None)
        if ins == 0x50:
            resp = self.scp.initialize_update(cmd)
        elif ins == 0x82:
            resp = self.scp.external_authenticate(cmd)
        elif not cla & 0x04:
            self.seen.append(cmd)
            resp = ResponseApdu(b"\x9f\x65\x01\xef", 0x9000) if ins == 0xCA else ResponseApdu(
                b"", 0x6982)
        else:
            try:
                plain = self.scp.unwrap(cmd)
            except CommandRejected as err:
                return err.sw.to_bytes(2, "big")
            self.seen.append(plain)
            if plain.ins == 0xF2:
                entry = encode_tlv(0xE3, encode_tlv(0x4F, ISD) + encode_tlv(0x9F70, b"\x0f"))
                resp = self.scp.wrap(ResponseApdu(entry, 0x6310 if plain.p2 & 1 == 0
                                                  else 0x9000))
            else:
                resp = self.scp.wrap(ResponseApdu(plain.data[::-1], 0x9000))
            if self.tamper:
                resp = ResponseApdu(resp.data[:-1] + bytes((resp.data[-1] ^ 1,)), resp.sw)
        return resp.data + resp.sw.to_bytes(2, "big")


def open_channel(card: EchoCard, level: int = 0x33) -> tuple[ApduProtocol, Scp03Channel]:
    proto = ApduProtocol(card)
    session = Scp03Session(DiversifyingKeyStore(MASTER), level=level, isd_aid=ISD)
    return proto, Scp03Channel.open(proto, session)


def test_plain_channel_sends_as_is() -> None:
    card = EchoCard()
    assert send_ok(PlainChannel(), ApduProtocol(card), get_data(0x9F65), "GET DATA") == (
        b"\x9f\x65\x01\xef")
    assert card.seen == [get_data(0x9F65)]


@pytest.mark.parametrize("level", [0x01, 0x03, 0x11, 0x13, 0x33])
def test_scp03_channel_round_trip(level: int) -> None:
    card = EchoCard()
    proto, channel = open_channel(card, level)
    cmd = CommandApdu(0x80, 0xE2, 0x88, 0x00, b"\x01\x02\x03\x04", le=256)
    resp = channel.send(proto, cmd)
    assert card.seen == [cmd]
    assert resp == ResponseApdu(b"\x04\x03\x02\x01", 0x9000)


def test_registry_over_the_secure_channel_follows_6310() -> None:
    card = EchoCard()
    proto, channel = open_channel(card)
    entries = read_registry(lambda c: channel.send(proto, c), Scope.ISD)
    assert [e.aid for e in entries] == [ISD, ISD]
    assert [c.p2 for c in card.seen] == [0x02, 0x03]


def test_tampered_response_over_the_wire_raises() -> None:
    card = EchoCard(tamper=True)
    proto, channel = open_channel(card)
    with pytest.raises(ResponseIntegrityError):
        channel.send(proto, CommandApdu(0x80, 0xE2, 0x88, 0x00, b"\x01"))


def test_split_mode_service_wraps_terminal_relays() -> None:
    """The service (keys) wraps a batch; the terminal only relays; the service unwraps."""
    card = EchoCard()
    terminal = ApduProtocol(card)
    service = Scp03Session(DiversifyingKeyStore(MASTER), level=0x33, isd_aid=ISD)
    [init] = relay(terminal, [service.begin()])
    [auth] = relay(terminal, [service.open(init)])
    service.confirm(auth)
    image = bytes(range(256)) * 3
    plain = load_commands(image, max_block_size(239, service.level))
    answers = relay(terminal, [service.wrap(c) for c in plain])
    assert len(answers) == len(plain)
    assert [service.unwrap(a).data for a in answers] == [c.data[::-1] for c in plain]
    assert b"".join(c.data for c in card.seen) == image


def test_relay_stops_at_the_first_error() -> None:
    card = EchoCard()
    terminal = ApduProtocol(card)
    batch = [CommandApdu(0x80, 0xE8, 0x00, n, b"\x00") for n in range(3)]  # not secured: 6982
    answers = relay(terminal, batch)
    assert [parse_response(a.data + a.sw.to_bytes(2, "big")).sw for a in answers] == [0x6982]
