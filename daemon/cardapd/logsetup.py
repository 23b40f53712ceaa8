"""Structured logging: one JSON object per line (journald and log shippers index fields).

Fields: time, level, logger, message, and when present request_id, operation, reader.
A last line of defence scrubs any run of 12 digits (the shape of a My Number) from
messages; the daemon never reads one, and this keeps a bug from ever logging one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from cardapd.iso7816.traffic import TRAFFIC

_TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")
FIELDS = ("request_id", "operation", "reader", "card_id", "role")


def scrub(text: str) -> str:
    """Replace anything shaped like a My Number (12 digits alone)."""
    return _TWELVE_DIGITS.sub("[12 digits redacted]", text)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger once (level names: traffic, debug, info, warning, error)."""
    numeric = TRAFFIC if level == "traffic" else getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("grpc").setLevel(max(numeric, logging.WARNING))
