"""Strict BER-TLV (ISO/IEC 7816-4 §5.2) for untrusted card data: only CardProtocolError escapes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cardlib.errors import CardProtocolError

MAX_TAG_BYTES = 3
MAX_LENGTH = 0xFFFFFF  # 83 xx xx xx
MAX_DEPTH = 16


def _tag_end(data: bytes, offset: int) -> int:
    """Validate the tag at `offset` and return the offset just after it."""
    if offset >= len(data):
        raise CardProtocolError("TLV truncated: tag missing")
    first = data[offset]
    if first in (0x00, 0xFF):
        raise CardProtocolError(f"TLV tag byte {first:02X} is padding, not a tag")
    pos = offset + 1
    if first & 0x1F != 0x1F:
        return pos
    while True:
        if pos >= len(data):
            raise CardProtocolError("TLV truncated inside a multi-byte tag")
        byte = data[pos]
        if pos == offset + 1 and (byte <= 0x1E or byte == 0x80):
            raise CardProtocolError(f"invalid second tag byte {byte:02X}")
        pos += 1
        if not byte & 0x80:
            return pos
        if pos - offset >= MAX_TAG_BYTES:
            raise CardProtocolError(f"TLV tag longer than {MAX_TAG_BYTES} bytes")


def read_header(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Parse one tag and length at `offset`: (tag, value length, value offset); value unchecked."""
    pos = _tag_end(data, offset)
    tag = int.from_bytes(data[offset:pos], "big")
    if pos >= len(data):
        raise CardProtocolError("TLV truncated: length missing")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return tag, first, pos
    count = first & 0x7F
    if not 1 <= count <= 3:
        raise CardProtocolError(f"TLV length byte {first:02X} is not supported")
    if pos + count > len(data):
        raise CardProtocolError("TLV truncated inside the length")
    return tag, int.from_bytes(data[pos:pos + count], "big"), pos + count


def encode_tag(tag: int) -> bytes:
    """Encode a tag given as the integer of its bytes (e.g. 0x9F7F); ValueError if invalid."""
    if not 0 < tag < 1 << (8 * MAX_TAG_BYTES):
        raise ValueError(f"tag {tag:#x} out of range")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    try:
        end = _tag_end(raw, 0)
    except CardProtocolError as exc:
        raise ValueError(f"invalid tag {tag:#x}: {exc}") from None
    if end != len(raw):
        raise ValueError(f"invalid tag {tag:#x}: extra bytes")
    return raw


def encode_length(length: int) -> bytes:
    """Encode a length in the minimal 1-4 byte form."""
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"TLV length {length} out of range")
    if length < 0x80:
        return bytes((length,))
    size = (length.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Encode one TLV."""
    return encode_tag(tag) + encode_length(len(value)) + value


@dataclass(frozen=True)
class Tlv:
    """One data object: `tag` as the integer of its bytes, `value` raw."""

    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        """True when bit 6 of the first tag byte is set (the value holds TLVs)."""
        first = self.tag.to_bytes((self.tag.bit_length() + 7) // 8 or 1, "big")[0]
        return bool(first & 0x20)

    def encode(self) -> bytes:
        """Encode this TLV."""
        return encode_tlv(self.tag, self.value)

    def children(self) -> list[Tlv]:
        """Parse the value of a constructed TLV."""
        if not self.constructed:
            raise CardProtocolError(f"tag {self.tag:X} is primitive, it has no children")
        return parse_all(self.value)


def parse_one(data: bytes, offset: int = 0) -> tuple[Tlv, int]:
    """Parse the TLV at `offset`; return it and the offset after it."""
    tag, length, pos = read_header(data, offset)
    if pos + length > len(data):
        raise CardProtocolError(f"TLV {tag:X} declares {length} bytes, "
                                f"{len(data) - pos} present")
    return Tlv(tag, bytes(data[pos:pos + length])), pos + length


def parse_all(data: bytes) -> list[Tlv]:
    """Parse a concatenation of TLVs covering `data` exactly."""
    out: list[Tlv] = []
    offset = 0
    while offset < len(data):
        tlv, offset = parse_one(data, offset)
        out.append(tlv)
    return out


def parse_single(data: bytes, tag: int | None = None) -> Tlv:
    """Parse exactly one TLV (optionally with the expected tag) and nothing after it."""
    tlv, end = parse_one(data)
    if end != len(data):
        raise CardProtocolError(f"{len(data) - end} bytes after TLV {tlv.tag:X}")
    if tag is not None and tlv.tag != tag:
        raise CardProtocolError(f"expected tag {tag:X}, got {tlv.tag:X}")
    return tlv


def find(tlvs: Iterable[Tlv], tag: int) -> Tlv | None:
    """The first TLV with `tag`, or None."""
    return next((t for t in tlvs if t.tag == tag), None)


def walk(data: bytes, max_depth: int = MAX_DEPTH) -> Iterator[tuple[int, Tlv]]:
    """Yield (depth, tlv) for every TLV, recursing into constructed ones; validates all of it."""
    yield from _walk(data, 0, max_depth)


def _walk(data: bytes, depth: int, max_depth: int) -> Iterator[tuple[int, Tlv]]:
    """Recursive helper of `walk`."""
    if depth > max_depth:
        raise CardProtocolError(f"TLV nesting deeper than {max_depth}")
    for tlv in parse_all(data):
        yield depth, tlv
        if tlv.constructed:
            yield from _walk(tlv.value, depth + 1, max_depth)
