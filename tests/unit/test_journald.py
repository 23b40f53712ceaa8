"""journald native protocol: field mapping, binary-safe encoding, memfd, scrubbing, target."""

from __future__ import annotations

import array
import fcntl
import io
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardapd.telemetry import logcontext, logsetup
from cardapd.telemetry.journald import (
    SOCKET_ENV,
    JournalHandler,
    JournalSender,
    encode,
    priority,
    valid_field_name,
)
from cardapd.telemetry.logsetup import (
    JsonFormatter,
    choose_target,
    scrub,
    setup_logging,
    under_journal,
)
from cardlib.traffic import TRAFFIC

MY_NUMBER_SHAPE = "123456789012"


def decode(data: bytes) -> dict[str, bytes]:
    """Parse one native-protocol entry (what journald does)."""
    out: dict[str, bytes] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        out[key.decode()] = value
    return out


def text(entry: dict[str, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in entry.items()}


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A datagram socket standing in for journald's."""
    path = tmp_path / "socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def receive(sock: socket.socket) -> dict[str, bytes]:
    """One entry, from a datagram or from a memfd passed with SCM_RIGHTS."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:fds.itemsize])
    if fds:
        with os.fdopen(fds[0], "rb") as f:
            return decode(os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0))
    return decode(data)


def record(msg: str = "hello", level: int = logging.INFO, name: str = "cardapd.test",
           **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, "/srv/cardapd/x.py", 42, msg, None, None, func="fn")
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


# ---------------------------------------------------------------- encoding


def test_simple_fields_are_key_equals_value() -> None:
    assert encode({"MESSAGE": "hi", "PRIORITY": "6"}) == b"MESSAGE=hi\nPRIORITY=6\n"
    assert encode({"MESSAGE": "caf\u00e9"}) == "MESSAGE=caf\u00e9\n".encode()


def test_values_with_newlines_use_the_binary_safe_form() -> None:
    value = "first line\nsecond = line\n"
    data = encode({"MESSAGE": value, "X": b"\x00\xff=\n"})
    assert data.startswith(b"MESSAGE\n" + struct.pack("<Q", len(value)) + value.encode() + b"\n")
    assert decode(data) == {"MESSAGE": value.encode(), "X": b"\x00\xff=\n"}


@pytest.mark.parametrize("name", ["message", "_PID", "1ABC", "A-B", "", "A" * 65, "CAF\u00c9"])
def test_invalid_field_names_are_refused(name: str) -> None:
    assert not valid_field_name(name)
    with pytest.raises(ValueError, match="invalid journal field name"):
        encode({name: "x"})


def test_valid_field_names() -> None:
    for name in ("MESSAGE", "CARDAPD_REQUEST_ID", "CODE_LINE", "A" * 64, "X1_"):
        assert valid_field_name(name)


# ---------------------------------------------------------------- field mapping


@pytest.mark.parametrize(("level", "expect"), [
    (TRAFFIC, 7), (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4),
    (logging.ERROR, 3), (logging.CRITICAL, 2)])
def test_priorities_are_syslog_levels(level: int, expect: int) -> None:
    assert priority(level) == expect
    assert JournalHandler(scrub=scrub).fields(record(level=level))["PRIORITY"] == str(expect)


def test_fields_of_a_record() -> None:
    handler = JournalHandler(scrub=scrub)
    rec = record("loaded %s", request_id="r-1", operation="load_ap", reader="Reader 0",
                 card_id="CARD-9", role="kiosk")
    rec.args = ("AP-1",)
    assert handler.fields(rec) == {
        "MESSAGE": "loaded AP-1", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "cardapd",
        "CODE_FILE": "/srv/cardapd/x.py", "CODE_LINE": "42", "CODE_FUNC": "fn",
        "LOGGER": "cardapd.test", "THREAD_NAME": rec.threadName,
        "CARDAPD_REQUEST_ID": "r-1", "CARDAPD_OPERATION": "load_ap",
        "CARDAPD_READER": "Reader 0", "CARDAPD_CARD_ID": "CARD-9", "CARDAPD_ROLE": "kiosk"}
    assert "CARDAPD_READER" not in handler.fields(record(reader=""))


def test_context_fields_reach_the_journal(
        journal_socket: tuple[socket.socket, Path]) -> None:
    sock, path = journal_socket
    handler = JournalHandler(JournalSender(str(path)), scrub=scrub)
    handler.addFilter(logcontext.ContextFilter())
    log = logging.getLogger("cardapd.tests.journald")
    log.addHandler(handler)
    log.propagate = False
    try:
        with logcontext.bind(operation="diagnose", request_id="r-7", role="ops"):
            log.warning("diagnosing %s", "Reader 1", extra={"reader": "Reader 1"})
    finally:
        log.removeHandler(handler)
        log.propagate = True
        handler.close()
    entry = text(receive(sock))
    assert entry["MESSAGE"] == "diagnosing Reader 1"
    assert entry["PRIORITY"] == "4"
    assert entry["LOGGER"] == "cardapd.tests.journald"
    assert entry["CODE_FUNC"] == "test_context_fields_reach_the_journal"
    assert entry["CODE_FILE"] == __file__
    assert int(entry["CODE_LINE"]) > 0
    assert (entry["CARDAPD_OPERATION"], entry["CARDAPD_REQUEST_ID"], entry["CARDAPD_ROLE"],
            entry["CARDAPD_READER"]) == ("diagnose", "r-7", "ops", "Reader 1")


def test_every_field_is_scrubbed(journal_socket: tuple[socket.socket, Path]) -> None:
    sock, path = journal_socket
    handler = JournalHandler(JournalSender(str(path)), scrub=scrub)
    try:
        raise ValueError(f"bad value {MY_NUMBER_SHAPE}")
    except ValueError:
        rec = record(f"number {MY_NUMBER_SHAPE} here", level=logging.ERROR,
                     name=f"cardapd.{MY_NUMBER_SHAPE}", reader=f"Reader {MY_NUMBER_SHAPE}",
                     card_id=MY_NUMBER_SHAPE, request_id=f"x{MY_NUMBER_SHAPE}")
        rec.exc_info = sys.exc_info()
    handler.emit(rec)
    handler.close()
    raw = sock.recv(1 << 20)
    assert MY_NUMBER_SHAPE.encode() not in raw
    entry = text(decode(raw))
    assert entry["MESSAGE"].startswith("number [12 digits redacted] here\nTraceback")
    assert "ValueError: bad value [12 digits redacted]" in entry["MESSAGE"]
    assert entry["CARDAPD_READER"] == "Reader [12 digits redacted]"
    assert entry["CARDAPD_CARD_ID"] == "[12 digits redacted]"
    assert entry["LOGGER"] == "cardapd.[12 digits redacted]"
    # 13 digits are not a My Number's shape and stay
    assert text(decode(encode(handler.fields(record("1234567890123")))))["MESSAGE"] \
        == "1234567890123"


def test_a_multi_line_message_travels_binary_safe(
        journal_socket: tuple[socket.socket, Path]) -> None:
    sock, path = journal_socket
    handler = JournalHandler(JournalSender(str(path)), scrub=scrub)
    handler.emit(record("one\ntwo\n\nKEY=not a field"))
    handler.close()
    raw = sock.recv(1 << 20)
    assert b"MESSAGE\n" + struct.pack("<Q", 24) + b"one\ntwo\n\nKEY=not a field\n" in raw
    entry = decode(raw)
    assert entry["MESSAGE"] == b"one\ntwo\n\nKEY=not a field"
    assert "KEY" not in entry


def test_an_entry_too_big_for_a_datagram_goes_through_a_sealed_memfd(
        journal_socket: tuple[socket.socket, Path]) -> None:
    sock, path = journal_socket
    try:
        wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    except OSError:
        wmem_max = 1 << 20
    big = "x" * (2 * wmem_max + (1 << 20))
    JournalSender(str(path)).send(encode({"MESSAGE": big, "CARDAPD_OPERATION": "big"}))
    fds = array.array("i")
    data, ancdata, _f, _a = sock.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
    assert data == b""
    (level, kind, payload), = ancdata
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(payload[:fds.itemsize])
    seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE
    assert seals & fcntl.F_SEAL_SEAL
    with os.fdopen(fds[0], "rb") as f:  # journald maps it from offset 0
        entry = decode(os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0))
    assert entry == {"MESSAGE": big.encode(), "CARDAPD_OPERATION": b"big"}


def test_unreachable_journald_falls_back_to_the_stream(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = JournalHandler(JournalSender(str(tmp_path / "nothing")), scrub=scrub,
                             fallback=stream, fallback_formatter=JsonFormatter())
    handler.emit(record(f"still here {MY_NUMBER_SHAPE}", operation="load_ap"))
    line = json.loads(stream.getvalue())
    assert line["message"] == "still here [12 digits redacted]"
    assert line["operation"] == "load_ap"


# ---------------------------------------------------------------- choosing the target


def test_journal_stream_must_name_our_stderr(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as err, (tmp_path / "other").open("w") as other:
        st, so = os.fstat(err.fileno()), os.fstat(other.fileno())
        ours = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert under_journal(ours, err.fileno())
        assert choose_target(ours, err.fileno()) == "journal"
        # inherited by a child whose stderr was redirected elsewhere: not the journal
        assert not under_journal(ours, other.fileno())
        assert choose_target(ours, other.fileno()) == "stderr"
        assert not under_journal({"JOURNAL_STREAM": f"{so.st_dev}"}, other.fileno())
        assert not under_journal({"JOURNAL_STREAM": "a:b"}, err.fileno())
        assert not under_journal({}, err.fileno())
        assert choose_target({**ours, "CARDAPD_LOG_TARGET": "stderr"}, err.fileno()) == "stderr"
        assert choose_target({"CARDAPD_LOG_TARGET": "Journal"}, other.fileno()) == "journal"
        assert choose_target({**ours, "CARDAPD_LOG_TARGET": "nonsense"}, err.fileno()) \
            == "journal"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was (setup_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        logsetup.shutdown()
        for h in list(root.handlers):
            root.removeHandler(h)
            if isinstance(h, JournalHandler):
                h.close()
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_setup_logging_to_the_journal(journal_socket: tuple[socket.socket, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = journal_socket
    monkeypatch.setenv(logsetup.TARGET_ENV, "journal")
    monkeypatch.setenv(SOCKET_ENV, str(path))
    assert setup_logging("debug", "json") == "journal"
    with logcontext.bind(operation="read_user_id", request_id="r-9", reader="Reader 2"):
        logging.getLogger("cardapd.tests").debug("from the root handler")
    entry = text(receive(sock))
    assert entry["MESSAGE"] == "from the root handler"
    assert entry["PRIORITY"] == "7"
    assert entry["SYSLOG_IDENTIFIER"] == "cardapd"
    assert entry["CARDAPD_OPERATION"] == "read_user_id"
    assert entry["CARDAPD_REQUEST_ID"] == "r-9"
    assert entry["CARDAPD_READER"] == "Reader 2"


@pytest.mark.usefixtures("root_logging")
def test_missing_journal_socket_falls_back_to_json_on_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(logsetup.TARGET_ENV, "journal")
    monkeypatch.setenv(SOCKET_ENV, str(tmp_path / "no-journald"))
    assert setup_logging("info", "json") == "stderr"
    with logcontext.bind(operation="diagnose", reader="Reader 3"):
        logging.getLogger("cardapd.tests").info(f"json {MY_NUMBER_SHAPE}")
    logsetup.flush()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["level"] == "warning"
    assert "no-journald" in lines[0]["message"]
    assert lines[1]["message"] == "json [12 digits redacted]"
    assert lines[1]["operation"] == "diagnose"
    assert lines[1]["reader"] == "Reader 3"
    assert "time" in lines[1]
    assert lines[1]["logger"] == "cardapd.tests"


@pytest.mark.usefixtures("root_logging")
def test_stderr_by_default_outside_systemd(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(logsetup.TARGET_ENV, raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert setup_logging("info", "text") == "stderr"
    with logcontext.bind(operation="diagnose"):
        logging.getLogger("cardapd.tests").info("plain text")
    logsetup.flush()
    err = capsys.readouterr().err
    assert "INFO    cardapd.tests: plain text" in err
