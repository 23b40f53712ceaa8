"""SQLite-backed stores of the daemon: the hash-chained audit log and its export.

Public API (import from here): `AuditLog`, `AsyncAuditLog`, `AuditEntry`, `AuditRecord`,
`Durability`, `verify`, `VerifyResult`, `Problem`, `AuditFilter`, `query`,
`export_jsonl`, `export_csv`.
"""

from cardapd.storage import Durability
from cardapd.store.audit import (
    AuditEntry,
    AuditLog,
    AuditRecord,
)
from cardapd.store.export import AuditFilter, export_csv, export_jsonl, query
from cardapd.store.head import head_path_for
from cardapd.store.verify import Problem, VerifyResult, verify
from cardapd.store.writer import AsyncAuditLog

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
