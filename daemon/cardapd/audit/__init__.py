"""The audit trail: the hash-chained operation history in SQLite, its head anchor, the
sink every operation is recorded through, export, verification and the yearly report.

Public API (import from here): `AuditLog`, `AsyncAuditLog`, `AuditEntry`, `AuditRecord`,
`Durability`, `verify`, `VerifyResult`, `Problem`, `AuditFilter`, `query`,
`export_jsonl`, `export_csv`.
"""

from cardapd.audit.export import AuditFilter, export_csv, export_jsonl, query
from cardapd.audit.head import head_path_for
from cardapd.audit.log import (
    AuditEntry,
    AuditLog,
    AuditRecord,
)
from cardapd.audit.verify import Problem, VerifyResult, verify
from cardapd.audit.writer import AsyncAuditLog
from cardapd.storage import Durability

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
