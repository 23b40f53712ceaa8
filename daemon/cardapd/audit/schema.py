"""The audit log's schema: its forward-only migrations (opened through `cardapd.storage`).

Version 2 adds the segments (docs/decisions.md D32): `audit_segments` lists each sealed
segment — its seq range, the hash it starts from and the hash of its seal row, when it was
verified, exported and dropped — and stays when the segment's rows are dropped, as the
tombstone the chain kept on the terminal starts from. A partial index finds the rare rows
verification and retention look for (anchor resets, acknowledgements, seals, yearly
reports) without costing the gate's appends anything. The delete guard now lets through
only rows of a segment that is verified, exported and being dropped.
"""

from __future__ import annotations

from cardapd.storage import Migration, Schema

ANCHOR_RESET = "audit_anchor_reset"
"""A row the log writes itself when `audit.head` disagrees with the database at open."""
RESET_ACKNOWLEDGED = "audit_reset_acknowledged"
"""An administrator's acknowledgement of an anchor reset (detail: reset_seq, reason)."""
SEGMENT_SEALED = "audit_segment_sealed"
"""The last row of a segment (detail: segment, first_seq, rows)."""
YEARLY_REPORT = "yearly_report"
"""A yearly report was made (detail: year, audit_ok)."""
MARKS = (ANCHOR_RESET, RESET_ACKNOWLEDGED, SEGMENT_SEALED, YEARLY_REPORT)
"""The operations of the partial index `audit_marks` (a query must name them all, in this
order, for SQLite to use it)."""
MARKS_SQL = ", ".join(f"'{m}'" for m in MARKS)

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
    Migration(
        2,
        "audit log: sealed segments, marks index, retention of exported segments",
        (
            """CREATE TABLE audit_segments (
                   segment INTEGER PRIMARY KEY,
                   first_seq INTEGER NOT NULL,
                   last_seq INTEGER NOT NULL,
                   prev_hash BLOB NOT NULL,
                   last_hash BLOB NOT NULL,
                   first_ts_us INTEGER NOT NULL,
                   last_ts_us INTEGER NOT NULL,
                   rows INTEGER NOT NULL,
                   sealed_us INTEGER NOT NULL,
                   verified_us INTEGER,
                   export_file TEXT,
                   export_sha256 TEXT,
                   exported_us INTEGER,
                   drop_started_us INTEGER,
                   dropped_us INTEGER
               ) STRICT""",
            "CREATE UNIQUE INDEX audit_segments_last ON audit_segments(last_seq)",
            f"""CREATE INDEX audit_marks ON audit(operation, seq)
               WHERE operation IN ({MARKS_SQL})""",
            "DROP TRIGGER audit_no_delete",
            """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
               WHEN NOT EXISTS (SELECT 1 FROM audit_segments s
                                WHERE s.last_seq >= OLD.seq AND s.first_seq <= OLD.seq
                                  AND s.verified_us IS NOT NULL
                                  AND s.exported_us IS NOT NULL
                                  AND s.drop_started_us IS NOT NULL)
               BEGIN SELECT RAISE(ABORT, 'audit log is append-only (retention drops
                   only rows of verified, exported segments)'); END""",
        ),
    ),
))
