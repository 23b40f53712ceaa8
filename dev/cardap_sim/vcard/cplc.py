"""The 42-byte CPLC (GET DATA 9F7F): field layout, defaults per profile, card id string."""

from __future__ import annotations

import secrets

from .profiles import Profile

# (name, length) in card order; the lengths add up to 42.
CPLC_FIELDS: tuple[tuple[str, int], ...] = (
    ("ic_fabricator", 2), ("ic_type", 2), ("os_id", 2), ("os_release_date", 2),
    ("os_release_level", 2), ("ic_fabrication_date", 2), ("ic_serial", 4),
    ("ic_batch", 2), ("module_fabricator", 2), ("module_packaging_date", 2),
    ("icc_manufacturer", 2), ("ic_embedding_date", 2), ("pre_perso_id", 2),
    ("pre_perso_date", 2), ("pre_perso_equipment", 4), ("perso_id", 2),
    ("perso_date", 2), ("perso_equipment", 4),
)
CPLC_LENGTH = sum(n for _, n in CPLC_FIELDS)
assert CPLC_LENGTH == 42


def new_cplc(profile: Profile, serial: int | None) -> dict[str, str]:
    """Fresh CPLC fields (hex) for a new card; a random IC serial unless one is given."""
    if serial is None:
        serial = secrets.randbits(32)
    if not 0 <= serial <= 0xFFFFFFFF:
        raise ValueError("IC serial must fit in 4 bytes")
    fields = {name: "00" * n for name, n in CPLC_FIELDS}
    fields.update(
        ic_fabricator=profile.ic_fabricator.hex().upper(),
        ic_type=profile.ic_type.hex().upper(),
        os_id=profile.os_id.hex().upper(),
        os_release_date="4123",
        os_release_level="0102",
        ic_fabrication_date="4200",
        ic_serial=f"{serial:08X}",
        ic_batch="0001",
        perso_date="4210",
    )
    return fields


def encode_cplc(fields: dict[str, str]) -> bytes:
    """The 42 data bytes of the CPLC in card order (a missing or wrong-sized field is an error)."""
    out = bytearray()
    for name, n in CPLC_FIELDS:
        value = bytes.fromhex(fields[name])
        if len(value) != n:
            raise ValueError(f"CPLC field {name} must be {n} bytes")
        out += value
    return bytes(out)


def card_id(fields: dict[str, str]) -> str:
    """The daemon's card name: `<IC fabricator hex>-<IC serial hex>`."""
    return f"{fields['ic_fabricator'].upper()}-{fields['ic_serial'].upper()}"
