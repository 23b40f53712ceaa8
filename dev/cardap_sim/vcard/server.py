"""The simulator process: vpcd slots plus the JSON-lines control socket."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from .card import VirtualCard
from .control import MAX_LINE, encode
from .errors import VcardError
from .faults import Faults
from .vpcd import VpcdSlot

log = logging.getLogger("cardap_sim.vcard.server")

COMMANDS = frozenset({"insert", "remove", "status", "selects", "apdus", "clear_apdus", "fault",
                      "block_pin"})


class RequestError(Exception):
    """A control request that cannot be carried out; its text goes back to the client."""


class SimServer:
    """Owns the slots; `handle` executes one control request (thread-safe)."""

    def __init__(self, host: str, port: int, slots: int) -> None:
        if not 1 <= slots <= 16:
            raise ValueError("slots must be 1-16")
        self.slots = [VpcdSlot(i, host, port + i) for i in range(slots)]
        self._paths: dict[int, Path] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Remove every card (links close)."""
        for slot in self.slots:
            slot.remove()

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run one request; errors become `{"ok": false, "error": ...}`."""
        try:
            with self._lock:
                result = self._dispatch(req)
        except (RequestError, VcardError, ValueError, RuntimeError, OSError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, **result}

    def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        """Route by `cmd`."""
        cmd = req.get("cmd")
        if cmd not in COMMANDS:
            raise RequestError(f"unknown command {cmd!r}")
        if cmd == "status":
            return {"slots": [self._slot_status(s) for s in self.slots]}
        if cmd == "insert":
            return self._insert(self._slot(req), req.get("card"),
                                bool(req.get("contactless", False)), req.get("faults"))
        if cmd == "clear_apdus" and req.get("slot") is None:
            cleared = [s.index for s in self.slots if s.card is not None]
            for s in self.slots:
                if s.card is not None:
                    s.card.clear_apdus()
            return {"cleared": cleared}
        slot = self._slot(req)
        if cmd == "remove":
            card = slot.remove()
            self._paths.pop(slot.index, None)
            return {"removed": card is not None}
        card = slot.card
        if card is None:
            raise RequestError(f"slot {slot.index} is empty")
        if cmd == "selects":
            return {"selects": [aid.hex().upper() for aid in card.selects]}
        if cmd == "apdus":
            entries = card.apdu_log
            return {"apdus": [header.hex().upper() for header, _ in entries],
                    "pin_verifies": [i for i, (_, pin) in enumerate(entries) if pin]}
        if cmd == "clear_apdus":
            card.clear_apdus()
            return {"cleared": [slot.index]}
        if cmd == "fault":
            settings = {k: v for k, v in req.items() if k not in ("cmd", "slot", "clear")}
            Faults().update(**settings)  # validate everything before changing anything
            card.set_faults(clear=bool(req.get("clear")), **settings)
            slot.check_torn()
            return {"faults": card.faults.to_json()}
        if cmd == "block_pin":
            which = req.get("which")
            if which == "auth" or which == "sign":
                card.block_pin(which)
                return {}
            raise RequestError("which must be 'auth' or 'sign'")
        raise RequestError(f"unknown command {cmd!r}")

    def _slot(self, req: dict[str, Any]) -> VpcdSlot:
        """The slot named by the request."""
        index = req.get("slot")
        if not isinstance(index, int) or isinstance(index, bool) \
                or not 0 <= index < len(self.slots):
            raise RequestError(f"slot must be an integer 0-{len(self.slots) - 1}")
        return self.slots[index]

    def _insert(self, slot: VpcdSlot, card_path: object,
                contactless: bool = False, faults: object = None) -> dict[str, Any]:
        """Load the card file and put it in the slot (one slot per card file), presented
        contact or contactless, with `faults` (as `fault` sets them) from its first
        command on: a card slow from the reset, before the daemon has identified it."""
        if not isinstance(card_path, str) or not card_path:
            raise RequestError("insert needs `card`: the path of a card file")
        if faults is not None and not isinstance(faults, dict):
            raise RequestError("faults must be an object of fault settings")
        Faults().update(**(faults or {}))  # validate before inserting
        path = Path(card_path).resolve()
        for index, other in self._paths.items():
            if other == path and index != slot.index and self.slots[index].state == "inserted":
                raise RequestError(f"card {path} is already in slot {index}")
        if slot.state == "inserted":
            raise RequestError(f"slot {slot.index} is occupied; remove the card first")
        card = VirtualCard.load(path)
        card.faults.update(**(faults or {}))
        card.present(contactless=contactless)
        slot.insert(card)
        self._paths[slot.index] = path
        return {"card_id": card.card_id}

    def _slot_status(self, slot: VpcdSlot) -> dict[str, Any]:
        """One slot's entry in `status` (never the fake My Number)."""
        card = slot.card
        entry: dict[str, Any] = {"slot": slot.index, "port": slot.port, "state": slot.state,
                                 "connected": slot.connected}
        if card is not None:
            entry.update(card=str(card.path), card_id=card.card_id,
                         serial=f"{card.ic_serial:08X}", profile=card.profile.name,
                         apdu_count=card.apdu_count, powered=card.powered,
                         contactless=card.contactless, faults=card.faults.to_json())
        return entry


class _Handler(socketserver.StreamRequestHandler):
    """Reads request lines and writes one response line each."""

    server: ControlServer

    def handle(self) -> None:
        """Serve one control connection until the client closes it."""
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a request is a JSON object")
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"bad request: {exc}"}
            else:
                reply = self.server.sim.handle(req)
            self.wfile.write(encode(reply))
            self.wfile.flush()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The Unix control socket (one thread per client connection)."""

    daemon_threads = True

    def __init__(self, path: Path, sim: SimServer) -> None:
        self.sim = sim
        self.path = path
        _remove_stale_socket(path)
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)

    def server_close(self) -> None:
        """Close and unlink the socket."""
        super().server_close()
        self.path.unlink(missing_ok=True)


def _remove_stale_socket(path: Path) -> None:
    """Unlink a left-over socket file unless a live server still answers on it."""
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise RuntimeError(f"another simulator is listening on {path}")


def serve(host: str, port: int, slots: int, control: Path,
          stop: threading.Event | None = None) -> None:
    """Run the simulator until `stop` is set (or forever); cleans up slots and the socket."""
    sim = SimServer(host, port, slots)
    server = ControlServer(control, sim)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="control", daemon=True)
    thread.start()
    log.info("cardap-sim ready: vpcd %s:%d+%d slots, control %s", host, port, slots, control)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        sim.close()
        log.info("cardap-sim stopped")
