"""Structured logging: native journald entries under systemd, else JSON lines on stderr.

Fields: time, level, logger, message, and when present request_id, operation, reader,
card_id, role (from `extra=` or from `logcontext`). Under systemd (JOURNAL_STREAM names our
stderr) records go to journald as native entries with indexable CARDAPD_* fields
(`journald`); `CARDAPD_LOG_TARGET=journal|stderr` overrides the choice. A last line of
defence scrubs any run of 12 digits (the shape of a My Number) from messages and fields;
the daemon never reads one, and this keeps a bug from ever logging one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cardapd.telemetry.journald import JournalHandler, JournalSender
from cardapd.telemetry.logcontext import ContextFilter
from cardlib.traffic import TRAFFIC

_TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")
FIELDS = ("request_id", "operation", "reader", "card_id", "role")
TARGET_ENV = "CARDAPD_LOG_TARGET"  # "auto" (the default), "journal" or "stderr"
TARGETS = ("auto", "journal", "stderr")


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
                out[key] = scrub(str(value))
        if record.exc_info:
            out["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def under_journal(environ: Mapping[str, str] | None = None, stderr_fd: int = 2) -> bool:
    """Whether stderr is systemd's journal stream (JOURNAL_STREAM is its device:inode).

    systemd sets JOURNAL_STREAM for a service whose stderr goes to the journal; a child
    whose stderr was redirected inherits the variable, hence the comparison with fstat.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def choose_target(environ: Mapping[str, str] | None = None, stderr_fd: int = 2) -> str:
    """`journal` or `stderr`: CARDAPD_LOG_TARGET if set, else journal under systemd."""
    env = os.environ if environ is None else environ
    wanted = env.get(TARGET_ENV, "auto").strip().lower() or "auto"
    if wanted in ("journal", "stderr"):
        return wanted
    return "journal" if under_journal(env, stderr_fd) else "stderr"


def setup_logging(level: str = "info", fmt: str = "json", target: str | None = None) -> str:
    """Configure the root logger once (level names: traffic, debug, info, warning, error).

    `target`: "journal", "stderr" or None/"auto" (see `choose_target`). Returns the target
    in use: a journal whose socket does not exist falls back to stderr, with a warning.
    """
    numeric = TRAFFIC if level == "traffic" else getattr(logging, level.upper())
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    notes: list[str] = []
    raw = os.environ.get(TARGET_ENV, "").strip().lower()
    if target in (None, "auto") and raw and raw not in TARGETS:
        notes.append(f"{TARGET_ENV}={raw!r} is not one of {', '.join(TARGETS)}; using auto")
    chosen = choose_target() if target in (None, "auto") else target
    handler: logging.Handler | None = None
    if chosen == "journal":
        sender = JournalSender()
        if sender.available():
            handler = JournalHandler(sender, scrub=scrub, fallback_formatter=formatter)
        else:
            notes.append(f"journald socket {sender.path} not found; logging to stderr")
            chosen = "stderr"
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, JournalHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.getLogger("grpc").setLevel(max(numeric, logging.WARNING))
    for note in notes:
        logging.getLogger("cardapd").warning("%s", note)
    return chosen
