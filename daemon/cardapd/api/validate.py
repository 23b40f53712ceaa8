"""Request field checks: every string and bytes field has a bound and a shape."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cardapd.errors import InvalidArgument
from cardapd.myna.aids import check_aid
from cardapd.mynumber import looks_like_my_number

MAX_READER_NAME = 128
MAX_READERS_FILTER = 16
MAX_PIN = 16
_HEX = re.compile(r"[0-9A-Fa-f]*")


def reader_name(value: str, field: str = "reader") -> str:
    """A reader name: printable, at most 128 bytes (empty allowed: 'the only one')."""
    if len(value.encode()) > MAX_READER_NAME:
        raise InvalidArgument(f"{field}: at most {MAX_READER_NAME} bytes",
                              metadata={"field": field})
    if any(not ch.isprintable() for ch in value):
        raise InvalidArgument(f"{field}: control characters are not allowed",
                              metadata={"field": field})
    return value


def reader_filter(values: list[str]) -> list[str]:
    """A list of reader names for event filtering."""
    if len(values) > MAX_READERS_FILTER:
        raise InvalidArgument(f"readers: at most {MAX_READERS_FILTER} names",
                              metadata={"field": "readers"})
    return [reader_name(v, "readers") for v in values]


def aid(value: str, field: str = "aid") -> bytes | None:
    """The AID of a card AP in hex, 5..16 bytes, through the one AID check (never one that
    could select the input assist AP or a built-in AP); empty → None (the configured
    default)."""
    if not value:
        return None
    if len(value) > 32 or len(value) % 2 or not _HEX.fullmatch(value):
        raise InvalidArgument(f"{field}: an AID is 10 to 32 hex digits", metadata={"field": field})
    raw = bytes.fromhex(value)
    if len(raw) < 5:
        raise InvalidArgument(f"{field}: an AID is 10 to 32 hex digits", metadata={"field": field})
    return check_aid(raw, field)


def pin(value: bytes) -> bytes:
    """A PIN field: at most 16 bytes (never logged)."""
    if len(value) > MAX_PIN:
        raise InvalidArgument(f"pin: at most {MAX_PIN} bytes", metadata={"field": "pin"})
    return value


def interval(value: int, default: int = 10, high: int = 3600) -> int:
    """A stream interval in seconds: 0 → default, otherwise 1..high."""
    if value == 0:
        return default
    if not 1 <= value <= high:
        raise InvalidArgument(f"interval_s: 1..{high}", metadata={"field": "interval_s"})
    return value


def prefixes(values: list[str]) -> list[str]:
    """Metric name prefixes: at most 32, each at most 128 characters of [a-zA-Z0-9_:]."""
    if len(values) > 32 or any(len(v) > 128 or not re.fullmatch(r"[a-zA-Z0-9_:]*", v)
                               for v in values):
        raise InvalidArgument("prefixes: at most 32 metric name prefixes",
                              metadata={"field": "prefixes"})
    return values


TIMESTAMP_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
"""The range of google.protobuf.Timestamp (its documentation): anything else is not a time."""


def timestamp(value: Timestamp, field: str) -> datetime:
    """A protobuf Timestamp as an aware datetime; out of the Timestamp range (nanos outside
    0..999999999, seconds before 0001-01-01 or after 9999-12-31) is INVALID_ARGUMENT."""
    if not 0 <= value.nanos <= 999_999_999:
        raise InvalidArgument(f"{field}: nanos must be 0 to 999999999, not {value.nanos}",
                              reason="TIMESTAMP_OUT_OF_RANGE", metadata={"field": field})
    if not TIMESTAMP_MIN_SECONDS <= value.seconds <= TIMESTAMP_MAX_SECONDS:
        raise InvalidArgument(f"{field}: seconds must lie between 0001-01-01 and "
                              f"9999-12-31T23:59:59Z, not {value.seconds}",
                              reason="TIMESTAMP_OUT_OF_RANGE", metadata={"field": field})
    return value.ToDatetime(tzinfo=UTC)


def free_text(value: str, field: str, max_chars: int = 256) -> str:
    """A free-text field stored in audit rows: at most `max_chars` characters, and refused
    when it holds what looks like a My Number (D9: checked before anything is stored)."""
    if len(value) > max_chars:
        raise InvalidArgument(f"{field}: at most {max_chars} characters",
                              metadata={"field": field})
    if looks_like_my_number(value):
        raise InvalidArgument(f"{field}: holds what looks like a My Number; the terminal "
                              "never stores one", reason="MY_NUMBER_REFUSED",
                              metadata={"field": field})
    return value
