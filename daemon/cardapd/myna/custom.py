"""Custom APs: the organisation's binary layout, the user ID found by configured data, not code."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cardapd.errors import ApNotFound, CardDataInvalid
from cardapd.myna.aids import select_aid
from cardapd.myna.files import MAX_OFFSET, read_binary
from cardapd.myna.userid import DEFAULT_RULE, USER_ID_LEN, UserIdRule
from cardlib.errors import CardProtocolError
from cardlib.protocol import ApduProtocol
from cardlib.tlv import encode_tag, parse_one

DEFAULT_SEARCH_LENGTH = 256
_TAG_KEYS = frozenset({"tag", "offset", "search_length"})
_PADDING = (0x00, 0xFF)  # ISO 7816-4 allows 00/FF before, between and after BER-TLV objects


class UserIdLocator:
    """Where a custom AP keeps its user ID (configuration, `[[read.aps]] locator`)."""

    __slots__ = ()


@dataclass(frozen=True)
class OffsetLocator(UserIdLocator):
    """The user ID is `length` (13) bytes at `offset` of the AP's binary file."""

    offset: int
    length: int = USER_ID_LEN

    def __post_init__(self) -> None:
        if self.length != USER_ID_LEN:
            raise ValueError(f"a user ID is {USER_ID_LEN} bytes, the locator says {self.length}")
        if self.offset < 0 or self.offset + self.length - 1 > MAX_OFFSET:
            raise ValueError(f"offset {self.offset} is outside a binary file")


@dataclass(frozen=True)
class TagLocator(UserIdLocator):
    """The user ID is the value of the first top-level BER-TLV `tag` from `offset` on."""

    tag: int
    offset: int = 0
    search_length: int = DEFAULT_SEARCH_LENGTH

    def __post_init__(self) -> None:
        encode_tag(self.tag)  # ValueError for an invalid tag
        if (self.offset < 0 or self.search_length < 1
                or self.offset + self.search_length - 1 > MAX_OFFSET):
            raise ValueError(f"cannot search {self.search_length} bytes at offset {self.offset}")


def _int(value: object, key: str) -> int:
    """An integer setting (bools refused); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"locator {key} must be an integer")
    return value


def parse_locator(spec: Mapping[str, object]) -> UserIdLocator:
    """`{"offset": 2, "length": 13}` or `{"tag": "C1", "offset"?, "search_length"?}`."""
    keys = set(spec)
    if "tag" in keys:
        if not keys <= _TAG_KEYS:
            raise ValueError(f"unknown locator keys: {sorted(keys - _TAG_KEYS)}")
        tag = spec["tag"]
        try:
            tag_int = int(tag, 16) if isinstance(tag, str) else _int(tag, "tag")
        except ValueError:
            raise ValueError(f"locator tag {tag!r} is not a hex BER-TLV tag") from None
        return TagLocator(tag_int, _int(spec.get("offset", 0), "offset"),
                          _int(spec.get("search_length", DEFAULT_SEARCH_LENGTH), "search_length"))
    if "offset" not in keys or not keys <= {"offset", "length"}:
        raise ValueError("a locator is {offset, length} or {tag[, offset, search_length]}")
    return OffsetLocator(_int(spec["offset"], "offset"),
                         _int(spec.get("length", USER_ID_LEN), "length"))


def find_tag(region: bytes, tag: int) -> bytes:
    """The value of the first top-level TLV `tag` in `region`; CardDataInvalid if none."""
    pos = 0
    while pos < len(region):
        if region[pos] in _PADDING:
            pos += 1
            continue
        try:
            tlv, pos = parse_one(region, pos)
        except CardProtocolError:
            break
        if tlv.tag == tag:
            return tlv.value
    raise CardDataInvalid(f"custom AP: no well-formed TLV {tag:X} in the configured region")


@dataclass(frozen=True)
class CustomRecord:
    """What a custom AP read gives: the user ID the locator points at."""

    user_id: str


class CustomApSession:
    """Reads custom instances with plain READ BINARY; the layout comes from a locator."""

    def __init__(self, proto: ApduProtocol) -> None:
        self.proto = proto

    def read(self, aid: bytes, locator: UserIdLocator,
             cancel: threading.Event | None = None,
             rule: UserIdRule = DEFAULT_RULE) -> CustomRecord:
        """SELECT the instance and find the user ID; ApNotFound / CardDataInvalid, no guess."""
        if not select_aid(self.proto, aid, "SELECT custom AP", cancel=cancel):
            raise ApNotFound("the custom AP is not on this card",
                             metadata={"aid": aid.hex().upper()})
        if isinstance(locator, OffsetLocator):
            raw = read_binary(self.proto, locator.length, locator.offset, cancel=cancel)
            if len(raw) != locator.length:
                raise CardDataInvalid(f"custom AP: the file ends before offset "
                                      f"{locator.offset} + {locator.length}")
        else:
            assert isinstance(locator, TagLocator)
            region = read_binary(self.proto, locator.search_length, locator.offset,
                                 cancel=cancel)
            raw = find_tag(region, locator.tag)
        return CustomRecord(rule.decode(raw, "custom AP"))
