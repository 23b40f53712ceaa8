"""The engine's view of the audit log: every operation goes through `AuditSink.record`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from cardapd.engine.model import OpContext


class AuditSink(Protocol):
    """Appends one audit row; returns its sequence number once it is durable.

    `durable=True` asks for power-loss safety (loads, logins); False for process-crash
    safety only (high-rate reads). Raises `StoreError` when the row cannot be written:
    the operation must then be refused.
    """

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> int:
        """Append one row."""
        ...

    def head(self) -> int:
        """Sequence number of the newest row."""
        ...
