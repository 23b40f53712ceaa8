"""TRAFFIC logging: every APDU logged, secrets only as lengths, nothing hex inside sensitive()."""

from __future__ import annotations

import logging

import pytest
from test_iso7816_scripted import ScriptedConnection

from cardlib.apdu import CommandApdu
from cardlib.protocol import ApduProtocol
from cardlib.traffic import TRAFFIC, TrafficLoggingConnection

LOGGER = "test.traffic"


def _proto(script: list[tuple[str, str]]) -> tuple[ApduProtocol, ScriptedConnection]:
    conn = ScriptedConnection(script)
    return ApduProtocol(conn, logger=logging.getLogger(LOGGER)), conn


def test_level_registered() -> None:
    assert TRAFFIC == 5
    assert logging.getLevelName(TRAFFIC) == "TRAFFIC"


def test_plain_apdu_logged_in_hex(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRAFFIC, LOGGER)
    proto, _ = _proto([("00A4020C020006", "9000"), ("00B0000002", "4142" + "9000")])
    proto.send(CommandApdu(0, 0xA4, 2, 0x0C, b"\x00\x06"))
    proto.send(CommandApdu(0, 0xB0, 0, 0, le=2))
    assert caplog.messages == ["> 00A4020C 020006", "< 9000", "> 00B00000 02", "< 4142 9000"]


@pytest.mark.parametrize("ins", [0x20, 0x24, 0x2C, 0x82, 0x86, 0x88, 0xE2])
def test_secret_commands_logged_as_length(ins: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRAFFIC, LOGGER)
    cmd = CommandApdu(0x00, ins, 0x00, 0x80, b"9876")
    proto, _ = _proto([(cmd.encode().hex(), "9000")])
    proto.send(cmd)
    text = "\n".join(caplog.messages)
    assert "39383736" not in text
    assert "9876" not in text
    assert "[4 bytes redacted]" in text


def test_sensitive_redacts_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRAFFIC, LOGGER)
    proto, _ = _proto([("00B0000002112202", "C1D2" + "9000"), ("00B0000002", "E3F4" + "9000")])
    with proto.sensitive(), proto.sensitive():
        proto.send(CommandApdu(0, 0xB0, 0, 0, b"\x11\x22", le=2))
    proto.send(CommandApdu(0, 0xB0, 0, 0, le=2))
    text = "\n".join(caplog.messages)
    assert "1122" not in text
    assert "C1D2" not in text
    assert "[2 bytes redacted] 9000" in text
    assert "> 00B00000 [2 bytes redacted] 02" in text
    assert "E3F4 9000" in text  # sensitive() ended


def test_not_enabled_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    proto, _ = _proto([("00B0000002", "4142" + "9000")])
    proto.send(CommandApdu(0, 0xB0, 0, 0, le=2))
    assert caplog.messages == []


def test_wrapper_is_reused_and_delegates() -> None:
    conn = ScriptedConnection([], atr=b"\x3b\x01")
    wrapped = TrafficLoggingConnection(conn)
    proto = ApduProtocol(wrapped)
    assert proto.connection is wrapped
    assert proto.atr == b"\x3b\x01"
    assert wrapped.inner is conn
    wrapped.close()
