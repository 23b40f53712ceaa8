"""A scripted fake CardConnection (replays APDU → response pairs), shared by the unit tests."""

from __future__ import annotations

import pytest

from cardlib.protocol import ApduProtocol


class ScriptedConnection:
    """Answers each expected command APDU with its scripted response, in order."""

    def __init__(self, script: list[tuple[str, str]], atr: bytes = b"\x3b\x00") -> None:
        self.script = [(bytes.fromhex(c), bytes.fromhex(r)) for c, r in script]
        self.sent: list[bytes] = []
        self._atr = atr

    @property
    def atr(self) -> bytes:
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        if not self.script:
            raise AssertionError(f"unexpected APDU {apdu.hex().upper()}")
        cmd, resp = self.script.pop(0)
        assert apdu == cmd, f"expected {cmd.hex().upper()}, got {apdu.hex().upper()}"
        return resp

    def close(self) -> None:
        pass

    def assert_done(self) -> None:
        assert not self.script, f"{len(self.script)} scripted APDUs not sent"


def scripted(script: list[tuple[str, str]], atr: bytes = b"\x3b\x00"
             ) -> tuple[ApduProtocol, ScriptedConnection]:
    """An ApduProtocol over a fresh ScriptedConnection."""
    conn = ScriptedConnection(script, atr)
    return ApduProtocol(conn), conn


def test_scripted_connection_rejects_unexpected_apdu() -> None:
    conn = ScriptedConnection([("00A4040C00", "9000")])
    with pytest.raises(AssertionError):
        conn.transmit(bytes.fromhex("00B0000001"))
