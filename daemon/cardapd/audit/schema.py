"""The audit log's schema: its forward-only migrations (opened through `cardapd.storage`)."""

from __future__ import annotations

from cardapd.storage import Migration, Schema

AUDIT_SCHEMA = Schema("audit log", (
    Migration(
        1,
        "audit log: hash-chained operation history",
        (
            """CREATE TABLE audit (
                   seq INTEGER PRIMARY KEY,
                   ts_us INTEGER NOT NULL,
                   actor TEXT NOT NULL,
                   operation TEXT NOT NULL,
                   card_id TEXT,
                   reader TEXT,
                   result TEXT NOT NULL,
                   reason TEXT,
                   request_id TEXT,
                   detail TEXT NOT NULL,
                   prev_hash BLOB NOT NULL,
                   hash BLOB NOT NULL
               ) STRICT""",
            # No index on hash: each index costs a WAL page per commit on the gate path;
            # verification builds a temporary one only when it has to diagnose a break.
            "CREATE INDEX audit_ts ON audit(ts_us)",
            # Defence in depth against accidents (a stray UPDATE from a shell); an
            # attacker can drop these, which is what the hash chain is for.
            """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
            """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
        ),
    ),
))
