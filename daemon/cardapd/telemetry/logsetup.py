"""Structured logging: native journald entries under systemd, else JSON lines on stderr.

Fields: time, level, logger, message, and when present request_id, operation, reader,
card_id, role (from `extra=` or from `logcontext`) and the operation line's result,
reason, duration_ms, operator, audit_operation, audit_seq (`oplog`).

Records are written off the caller's thread: the root handler only copies a record (its
context fields, its message, the exception text) into a bounded queue, and one writer
thread formats and sends it. A slow journald or a stderr pipe nobody reads never stalls
the event loop or a reader's thread; when the queue is full a record is dropped and
counted, and the writer says how many once it catches up. Under systemd (JOURNAL_STREAM names our
stderr) records go to journald as native entries with indexable CARDAPD_* fields
(`journald`); `CARDAPD_LOG_TARGET=journal|stderr` overrides the choice. A last line of
defence scrubs any run of 12 digits (the shape of a My Number) from messages and fields;
the daemon never reads one, and this keeps a bug from ever logging one.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from cardapd.telemetry.journald import JournalHandler, JournalSender
from cardapd.telemetry.logcontext import ContextFilter
from cardlib.traffic import TRAFFIC

_TWELVE_DIGITS = re.compile(r"(?<!\d)\d{12}(?!\d)")
FIELDS = ("request_id", "operation", "reader", "card_id", "role", "audit_operation",
          "result", "reason", "duration_ms", "operator", "audit_seq")
QUEUE_SIZE = 10_000
"""Records waiting for the writer thread before new ones are dropped (and counted)."""
STOP_WAIT_S = 2.0
"""At exit, how long the queued records may take to be written."""
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
        elif record.exc_text:  # formatted before the record left its thread
            out["exception"] = scrub(record.exc_text)
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


class StderrHandler(logging.Handler):
    """Lines to stderr with os.write on its descriptor: no Python-level buffer or lock that
    the exit (logging.shutdown, the final flush) would wait on while the writer thread is
    blocked on a full pipe. A stream without a descriptor (a test's) is written to."""

    terminator = "\n"

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        try:
            self._fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def emit(self, record: logging.LogRecord) -> None:
        """Write one formatted line (dropped quietly once the reader is gone)."""
        try:
            line = self.format(record) + self.terminator
            if self._fd is None:
                self.stream.write(line)
                self.stream.flush()
                return
            view = memoryview(line.encode("utf-8", "backslashreplace"))
            while view:
                view = view[os.write(self._fd, view):]
        except BrokenPipeError:
            pass
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Nothing is buffered."""


class OffThreadHandler(logging.handlers.QueueHandler):
    """The root handler: runs the context filter on the caller's thread, makes the record
    self-contained and queues it for the writer thread (never blocks: a full queue drops
    the record and counts it)."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.records: queue.Queue[logging.LogRecord | None] = queue.Queue(size)
        super().__init__(self.records)
        self.dropped = 0
        self._exc = logging.Formatter()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy with the message merged and the traceback as text (the caller's objects
        may change, or be gone, by the time the writer runs)."""
        out = copy.copy(record)
        out.msg, out.args = record.getMessage(), None
        if record.exc_info:
            out.exc_text = record.exc_text or self._exc.formatException(record.exc_info)
            out.exc_info = None
        return out

    def enqueue(self, record: logging.LogRecord) -> None:
        """Queue the record, or drop and count it when the writer is that far behind."""
        try:
            self.records.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class Writer(logging.handlers.QueueListener):
    """The writer thread: sends each queued record to the real handler and reports the
    records the queue had to drop."""

    def __init__(self, source: OffThreadHandler, handler: logging.Handler) -> None:
        super().__init__(source.queue, handler)
        self.source = source
        self.handler = handler
        self._reported = 0

    def stop(self, wait: float = STOP_WAIT_S) -> None:
        """Write what is queued and end the thread, waiting at most `wait` seconds: an
        output that accepts nothing (a full pipe nobody reads) never holds up the exit."""
        thread = self._thread
        if thread is None:
            return
        try:
            self.source.records.put(None, timeout=wait)  # the listener's end-of-queue mark
        except queue.Full:
            return
        thread.join(wait)
        self._thread = None

    def handle(self, record: logging.LogRecord) -> None:
        """Write one record (after a note of what was dropped before it, if any). Only this
        thread writes: the handler's lock is not taken, so the exit never waits on it."""
        dropped = self.source.dropped
        if dropped > self._reported:
            note = logging.makeLogRecord({
                "name": "cardapd.log", "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": f"{dropped - self._reported} log record(s) dropped: the log writer "
                       "could not keep up"})
            self._reported = dropped
            self.handler.emit(note)
        self.handler.emit(record)


_writer: Writer | None = None


def _stop_writer() -> None:
    """Flush and stop the writer thread (at exit, or before a new configuration)."""
    global _writer
    if _writer is not None:
        writer, _writer = _writer, None
        writer.stop()
        if isinstance(writer.handler, JournalHandler):
            writer.handler.close()


def flush() -> None:
    """Wait until every record queued so far is written (tests; before reading a log)."""
    if _writer is not None:
        _writer.source.records.join()


def shutdown() -> None:
    """Write what is queued and stop the writer thread; the root logger keeps no handler
    of ours (also run at exit)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, OffThreadHandler):
            root.removeHandler(handler)
    _stop_writer()


def set_format(fmt: str) -> None:
    """Switch the stderr format at run time (a reload): `json` or `text`. Journald entries
    are native and have no format."""
    if _writer is not None and isinstance(_writer.handler, StderrHandler):
        _writer.handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())


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
        handler = StderrHandler()
        handler.setFormatter(formatter)
    front = OffThreadHandler()
    front.addFilter(ContextFilter())  # on the caller's thread: the context is there
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    _stop_writer()
    global _writer
    _writer = Writer(front, handler)
    _writer.start()
    root.addHandler(front)
    root.setLevel(numeric)
    logging.getLogger("grpc").setLevel(max(numeric, logging.WARNING))
    for note in notes:
        logging.getLogger("cardapd").warning("%s", note)
    return chosen


atexit.register(_stop_writer)
