"""The audit trail: the hash-chained operation history in SQLite, its head anchor, the
sink every operation is recorded through, export, verification and the yearly report.

Public API (import from here): `AuditLog`, `AsyncAuditLog`, `AuditEntry`, `AuditRecord`,
`Durability`, `verify`, `VerifyResult`, `Problem`, `AuditFilter`, `query`,
`export_jsonl`, `export_csv`.
"""

from typing import TYPE_CHECKING, Any

from cardapd.audit.export import AuditFilter, export_csv, export_jsonl, query
from cardapd.audit.head import head_path_for
from cardapd.audit.log import (
    AuditEntry,
    AuditLog,
    AuditRecord,
)
from cardapd.audit.verify import Problem, VerifyResult, verify
from cardapd.storage import Durability

if TYPE_CHECKING:
    from cardapd.audit.writer import AsyncAuditLog


def __getattr__(name: str) -> Any:
    """`AsyncAuditLog` on first use: the verification worker (a child process that needs
    no event loop) then starts without importing asyncio."""
    if name == "AsyncAuditLog":
        from cardapd.audit.writer import AsyncAuditLog
        return AsyncAuditLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AsyncAuditLog",
    "AuditEntry",
    "AuditFilter",
    "AuditLog",
    "AuditRecord",
    "Durability",
    "Problem",
    "VerifyResult",
    "export_csv",
    "export_jsonl",
    "head_path_for",
    "query",
    "verify",
]
