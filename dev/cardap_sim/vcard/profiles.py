"""Vendor profiles as data (ATR, CPLC fabricator, 9F65, area size, quirks): docs/card-model.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ReadBinaryEof = Literal["6282", "6C"]


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything that differs between the two chip vendors; code never branches on the name."""

    name: str
    atr: bytes
    ic_fabricator: bytes
    ic_type: bytes
    os_id: bytes
    max_command_data: int
    extended_area_size: int
    get_status_tlv: bool
    read_binary_eof: ReadBinaryEof
    my_number_card: bool = True
    """False for a foreign card: an ISD with CPLC but no JPKI or other My Number Card AP."""


PROFILES: dict[str, Profile] = {
    "vendor-a": Profile(
        name="vendor-a",
        atr=bytes.fromhex("3BC5FF8131FB458073C6010000"),
        ic_fabricator=bytes.fromhex("4790"),
        ic_type=bytes.fromhex("5032"),
        os_id=bytes.fromhex("4791"),
        max_command_data=0xEF,
        extended_area_size=32768,
        get_status_tlv=True,
        read_binary_eof="6282",
    ),
    "vendor-b": Profile(
        name="vendor-b",
        atr=bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B"),
        ic_fabricator=bytes.fromhex("4250"),
        ic_type=bytes.fromhex("0036"),
        os_id=bytes.fromhex("4251"),
        max_command_data=0xFF,
        extended_area_size=24576,
        get_status_tlv=False,
        read_binary_eof="6C",
    ),
    # Not a My Number Card: another maker's GlobalPlatform card (a staff or payment card),
    # so tests can check that the daemon tells the two apart by SELECT, not by ATR.
    "foreign": Profile(
        name="foreign",
        atr=bytes.fromhex("3B8A800180318073F741E0829000E5"),
        ic_fabricator=bytes.fromhex("4090"),
        ic_type=bytes.fromhex("7871"),
        os_id=bytes.fromhex("4091"),
        max_command_data=0xFF,
        extended_area_size=8192,
        get_status_tlv=True,
        read_binary_eof="6282",
        my_number_card=False,
    ),
}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; an unknown name is a ValueError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown card profile {name!r} (known: {', '.join(PROFILES)})") from None
