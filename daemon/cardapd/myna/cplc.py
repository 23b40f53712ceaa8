"""CPLC (GET DATA 9F7F): the card's IC identity, used to name a card without the My Number."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields

from cardlib.apdu import CommandApdu
from cardlib.errors import CardProtocolError
from cardlib.protocol import ApduProtocol
from cardlib.tlv import parse_single

CPLC_TAG = 0x9F7F
CPLC_LEN = 42


@dataclass(frozen=True)
class Cplc:
    """The 42 CPLC bytes split into their fields (layout in docs/card-model.md)."""

    ic_fabricator: bytes
    ic_type: bytes
    os_id: bytes
    os_release_date: bytes
    os_release_level: bytes
    ic_fabrication_date: bytes
    ic_serial_number: bytes
    ic_batch_identifier: bytes
    ic_module_fabricator: bytes
    ic_module_packaging_date: bytes
    icc_manufacturer: bytes
    ic_embedding_date: bytes
    ic_pre_personalizer: bytes
    ic_pre_personalization_date: bytes
    ic_pre_personalization_equipment: bytes
    ic_personalizer: bytes
    ic_personalization_date: bytes
    ic_personalization_equipment: bytes

    @property
    def card_id(self) -> str:
        """`"<IC fabricator hex>-<IC serial hex>"`, upper case, e.g. `4790-1A2B3C4D`."""
        return f"{self.ic_fabricator.hex().upper()}-{self.ic_serial_number.hex().upper()}"

    @property
    def fabricator_hex(self) -> str:
        """The IC fabricator as 4 upper-case hex digits (the profile key)."""
        return self.ic_fabricator.hex().upper()


_SIZES = (2, 2, 2, 2, 2, 2, 4, 2, 2, 2, 2, 2, 2, 2, 4, 2, 2, 4)
assert sum(_SIZES) == CPLC_LEN
assert len(_SIZES) == len(fields(Cplc))


def parse_cplc(data: bytes) -> Cplc:
    """Parse CPLC given as `9F 7F 2A` + 42 bytes or as the bare 42 bytes."""
    if len(data) != CPLC_LEN:
        data = parse_single(data, CPLC_TAG).value
    if len(data) != CPLC_LEN:
        raise CardProtocolError(f"CPLC is {len(data)} bytes, expected {CPLC_LEN}")
    parts: list[bytes] = []
    pos = 0
    for size in _SIZES:
        parts.append(bytes(data[pos:pos + size]))
        pos += size
    return Cplc(*parts)


def read_cplc(proto: ApduProtocol, *, cancel: threading.Event | None = None) -> Cplc | None:
    """GET DATA 9F7F with the ISD selected; None when the card has no CPLC (any non-9000 SW)."""
    resp = proto.send(CommandApdu(0x80, 0xCA, 0x9F, 0x7F, le=256), cancel=cancel)
    if not resp.ok:
        return None
    return parse_cplc(resp.data)
