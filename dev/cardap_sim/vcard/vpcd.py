"""The link from one virtual card to one vpcd slot (TCP, 2-byte length framing).

Insert = connect, remove = close. While a card is inserted and the link drops (vpcd or
pcscd restarting) the slot reconnects every 200 ms. vpcd writes length and payload
separately, so the socket sets TCP_NODELAY and re-arms TCP_QUICKACK before every recv;
without that each APDU waits for a delayed ACK (~48 ms instead of ~0.1 ms).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Literal

from .card import VirtualCard
from .errors import CardMute, CardNotPowered, CardTorn

log = logging.getLogger("cardap_sim.vcard.vpcd")

RETRY_SECONDS = 0.2
# What the slot sends when the modelled reader gives up on a mute card (faults
# reader_timeout_ms): the reader shim (cardap_sim.hotplug) answers it with the driver error
# a CCID reader gives; no card may answer it (its "SW1" 0x54 is impossible).
READER_TIMEOUT = b"\x00CARDAP-SIM:READER-TIMEOUT"
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0x00, 0x01, 0x02, 0x04
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

SlotState = Literal["empty", "inserted", "torn"]


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Read exactly n bytes (None at end of stream), re-arming QUICKACK before each recv."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return bytes(buf)


class VpcdSlot:
    """One vpcd slot (port = base port + slot index) and the card inserted in it, if any."""

    def __init__(self, index: int, host: str, port: int) -> None:
        self.index = index
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._card: VirtualCard | None = None
        self._torn = False
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def card(self) -> VirtualCard | None:
        """The inserted (or torn) card."""
        return self._card

    @property
    def state(self) -> SlotState:
        """empty, inserted (connected or reconnecting), or torn (the tear fault fired)."""
        if self._card is None:
            return "empty"
        return "torn" if self._torn else "inserted"

    @property
    def connected(self) -> bool:
        """True while the TCP link to vpcd is up."""
        return self._sock is not None

    def insert(self, card: VirtualCard) -> None:
        """Put a card in the slot: connect to vpcd (retrying until removed)."""
        with self._lock:
            if self._card is not None and not self._torn:
                raise RuntimeError(f"slot {self.index} already holds card {self._card.card_id}")
        self.remove()
        with self._lock:
            self._card, self._torn = card, False
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(card, self._stop),
                                            name=f"vpcd-slot{self.index}", daemon=True)
            self._thread.start()

    def remove(self) -> VirtualCard | None:
        """Take the card out: close the link and stop reconnecting; returns the card."""
        with self._lock:
            card, thread = self._card, self._thread
            self._stop.set()
            self._drop_link()
            self._card, self._thread, self._torn = None, None, False
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if card is not None:
            card.power_off()
        return card

    def check_torn(self) -> None:
        """Close the link now if the card's tear fault has fired (set from the control side)."""
        card = self._card
        if card is not None and card.torn:
            with self._lock:
                self._drop_link()

    def _drop_link(self) -> None:
        """Shut the socket down so a blocked recv returns (caller holds the lock)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self, card: VirtualCard, stop: threading.Event) -> None:
        """Slot thread: connect, serve, and reconnect until removed or torn."""
        while not stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
            except OSError:
                stop.wait(RETRY_SECONDS)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            with self._lock:
                if stop.is_set():
                    sock.close()
                    break
                self._sock = sock
                if card.torn:  # torn while connecting: check_torn found no socket yet
                    sock.shutdown(socket.SHUT_RDWR)
            log.info("slot %d: card %s connected to vpcd :%d", self.index, card.card_id,
                     self.port)
            try:
                self._serve(sock, card, stop)
            except OSError as exc:
                log.info("slot %d: link lost: %s", self.index, exc)
            finally:
                with self._lock:
                    self._sock = None
                sock.close()
                card.power_off()
            if card.torn:
                log.info("slot %d: card %s torn (fault)", self.index, card.card_id)
                with self._lock:
                    if self._card is card:
                        self._torn = True
                return
            if not stop.is_set():
                stop.wait(RETRY_SECONDS)

    def _serve(self, sock: socket.socket, card: VirtualCard, stop: threading.Event) -> None:
        """Answer vpcd until the link closes, the card is removed or torn."""
        while not stop.is_set():
            header = _recv_exact(sock, 2)
            if header is None:
                return
            size = int.from_bytes(header, "big")
            payload = _recv_exact(sock, size) if size else b""
            if payload is None:
                return
            if size == 1:
                answer = self._control(card, payload[0])
                if answer is not None:
                    sock.sendall(len(answer).to_bytes(2, "big") + answer)
                continue
            if size == 0:
                continue
            response = self._transmit(card, payload, stop)
            if response is None:
                return
            sock.sendall(len(response).to_bytes(2, "big") + response)
            if card.torn:
                return

    @staticmethod
    def _control(card: VirtualCard, code: int) -> bytes | None:
        """Power off / on / reset / get ATR; only get ATR is answered."""
        if code == CTRL_OFF:
            card.power_off()
        elif code == CTRL_ON:
            card.power_on()
        elif code == CTRL_RESET:
            card.reset()
        elif code == CTRL_ATR:
            return card.atr
        else:
            log.warning("unknown vpcd control byte %02X", code)
        return None

    def _transmit(self, card: VirtualCard, apdu: bytes, stop: threading.Event) -> bytes | None:
        """One APDU; None means close the link (torn, or removed while mute)."""
        while True:
            try:
                return card.transmit(apdu)
            except CardNotPowered:
                card.power_on()  # vpcd always powers on first; be lenient if it did not
            except CardMute:
                started = time.monotonic()
                while card.faults.mute and not card.torn:
                    limit = card.faults.reader_timeout_ms
                    if limit and time.monotonic() - started >= limit / 1000:
                        return READER_TIMEOUT
                    if stop.wait(0.02):
                        return None
            except CardTorn:
                return None
