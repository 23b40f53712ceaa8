"""A small asyncio D-Bus link over jeepney: replies by serial, signals into one queue.

Unlike jeepney's DBusRouter it reports the loss of the connection: every pending call
fails with `LinkLost` and the signal queue receives `LOST`, so a waiter never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from jeepney import HeaderFields, Message, MessageType
from jeepney.io.asyncio import DBusConnection, open_dbus_connection


class LinkLost(Exception):
    """The bus connection closed (the bus died or dropped us)."""


class DBusCallError(Exception):
    """A D-Bus error reply: its error name and message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


LOST: Final = object()


class Link:
    """One private connection to a bus."""

    def __init__(self, conn: DBusConnection) -> None:
        self._conn = conn
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self.signals: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._receive(), name="fprintd-link")

    @classmethod
    async def open(cls, address: str, limit_s: float) -> Link:
        """Connect and say Hello, within `limit_s` seconds."""
        conn = await asyncio.wait_for(open_dbus_connection(address), limit_s)
        return cls(conn)

    @property
    def unique_name(self) -> str:
        """Our unique name on the bus."""
        return str(self._conn.unique_name)

    async def _receive(self) -> None:
        """Dispatch replies and queue signals until the connection ends."""
        try:
            while True:
                msg = await self._conn.receive()
                serial = msg.header.fields.get(HeaderFields.reply_serial)
                fut = self._pending.pop(serial, None) if serial is not None else None
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                elif msg.header.message_type == MessageType.signal:
                    self.signals.put_nowait(msg)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(LinkLost("the bus connection closed"))
            self._pending.clear()
            self.signals.put_nowait(LOST)

    async def call(self, msg: Message, limit_s: float) -> tuple[Any, ...]:
        """Send a method call; its reply body, or DBusCallError / LinkLost / TimeoutError."""
        if self._task.done():
            raise LinkLost("the bus connection closed")
        serial = next(self._conn.outgoing_serial)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[serial] = fut
        try:
            await self._conn.send(msg, serial=serial)
            reply = await asyncio.wait_for(fut, limit_s)
        except (OSError, EOFError) as exc:
            raise LinkLost(str(exc)) from exc
        finally:
            self._pending.pop(serial, None)
        if reply.header.message_type == MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, ""))
            text = str(reply.body[0]) if reply.body else ""
            raise DBusCallError(name, text)
        return tuple(reply.body)

    async def close(self) -> None:
        """Close the connection (the bus then drops our name, and fprintd our claim)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.close(), 1.0)
