"""The simulator's control protocol (JSON lines on a Unix socket) and its Python client.

One request line `{"cmd": "...", ...}` gets one response line: `{"ok": true, ...}` or
`{"ok": false, "error": "..."}`. Commands: insert, remove, status, selects, apdus,
clear_apdus, fault, block_pin (see `cardap_sim.vcard.server`).

`apdus` answers `{"apdus": ["00A4040C", ...], "pin_verifies": [3]}`: the header (CLA INS P1
P2) of every command APDU the card in the slot received, never any command data (so never a
PIN), and the indices of those that were a VERIFY presenting a PIN value (a retry-counter
read, VERIFY without data, is not one; see `VirtualCard.apdu_log`); `clear_apdus` with a slot
forgets that card's list, without one every inserted card's.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

MAX_LINE = 1 << 20


class SimControlError(Exception):
    """The simulator refused a control request (its error message is the text)."""


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON line."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


class SimControl:
    """Client of `cardap-sim serve --control PATH` for test harnesses and the CLI."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one request; return the response object or raise SimControlError."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            sock.sendall(encode({"cmd": cmd, **args}))
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_LINE:
                    raise SimControlError("response line too long")
        if not data:
            raise SimControlError("the simulator closed the connection without answering")
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise SimControlError("malformed response")
        if not reply.get("ok"):
            raise SimControlError(str(reply.get("error", "unknown error")))
        return reply

    def insert(self, slot: int, card_path: str | Path, *,
               contactless: bool = False, faults: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        """Insert the card stored in `card_path` into `slot` (the sim connects it to vpcd);
        `contactless`: as a contactless reader presents it (synthesised ATR, no CPLC);
        `faults`: set (as `fault` does) before its first command."""
        extra = {"faults": faults} if faults else {}
        return self.request("insert", slot=slot, card=str(Path(card_path).resolve()),
                            contactless=contactless, **extra)

    def remove(self, slot: int) -> dict[str, Any]:
        """Remove the card from `slot` (the link to vpcd closes)."""
        return self.request("remove", slot=slot)

    def status(self) -> dict[str, Any]:
        """Slots with their card id, state, APDU count and faults."""
        return self.request("status")

    def selects(self, slot: int) -> list[bytes]:
        """Every AID the card in `slot` received in SELECT by AID since it was inserted."""
        return [bytes.fromhex(h) for h in self.request("selects", slot=slot)["selects"]]

    def apdus(self, slot: int) -> list[bytes]:
        """The header (CLA INS P1 P2) of every command APDU the card in `slot` received since
        it was inserted or the last clear_apdus; never command data."""
        return [bytes.fromhex(h) for h in self.request("apdus", slot=slot)["apdus"]]

    def pin_verifies(self, slot: int) -> list[bytes]:
        """The headers of the VERIFY commands that presented a PIN value to the card in
        `slot` (empty: no PIN try could have been spent; counter reads are not listed)."""
        reply = self.request("apdus", slot=slot)
        headers: list[str] = reply["apdus"]
        return [bytes.fromhex(headers[i]) for i in reply["pin_verifies"]]

    def clear_apdus(self, slot: int | None = None) -> dict[str, Any]:
        """Forget the recorded APDU headers of `slot` (None: of every inserted card)."""
        if slot is None:
            return self.request("clear_apdus")
        return self.request("clear_apdus", slot=slot)

    def fault(self, slot: int, **kw: Any) -> dict[str, Any]:
        """Set faults: tear_after, garbage, truncate, slow_ms, mute, reader_timeout_ms,
        full_extended_area, tamper, tamper_ins, refuse_ins, refuse_p1, refuse_sw,
        refuse_nth, clear; `after=N` holds the others until N more commands were answered
        (`cardap_sim.vcard.faults.Faults` says what each does)."""
        return self.request("fault", slot=slot, **kw)

    def block_pin(self, slot: int, which: str) -> dict[str, Any]:
        """Block the JPKI `auth` or `sign` PIN of the card in `slot` (persisted)."""
        return self.request("block_pin", slot=slot, which=which)
