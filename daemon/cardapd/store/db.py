"""Opening the store's SQLite database: WAL mode, pragmas and forward-only migrations.

The schema version lives twice, on purpose: `PRAGMA user_version` is what the code
checks (one integer in the header, read without a query plan) and the `schema_version`
table keeps the history (when each migration ran, what it did) for the operator.
Migrations only go forward; a database written by a newer daemon is refused rather
than half-understood. Each migration runs in one transaction with its version bump.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cardapd.errors import StoreError

BUSY_TIMEOUT_MS = 2000
"""How long a writer waits for a lock held by another connection before giving up."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step of the schema: its target version and its statements."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "audit log: hash-chained operation history",
        (
            """CREATE TABLE schema_version (
                   version INTEGER PRIMARY KEY,
                   applied_us INTEGER NOT NULL,
                   description TEXT NOT NULL
               ) STRICT""",
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
)

LATEST_VERSION = MIGRATIONS[-1].version


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database (WAL, manual transactions) and bring its schema up to date."""
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Shared by the writer thread and AsyncAuditLog's fast path, always under
            # AsyncAuditLog's lock: never two threads in it at once.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn, path)
        else:
            check_version(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: {exc}") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database header (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a database this code does not know (too new, or never initialised)."""
    version = schema_version(conn)
    if version > LATEST_VERSION:
        raise StoreError(f"{path}: schema version {version} is newer than this daemon "
                         f"understands ({LATEST_VERSION}); refusing to touch it")
    if version < LATEST_VERSION:
        raise StoreError(f"{path}: schema version {version}, expected {LATEST_VERSION} "
                         "(open it once with the daemon to migrate)")


def apply_migrations(conn: sqlite3.Connection, steps: tuple[Migration, ...],
                     version: int) -> None:
    """Apply each step newer than `version` in its own transaction with its version bump.

    Shared by every SQLite store of the daemon (audit log, roster); each keeps its own
    MIGRATIONS and its own check of a version it does not understand.
    """
    for step in steps:
        if step.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            if schema_version(conn) >= step.version:
                conn.execute("ROLLBACK")
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                         (step.version, time.time_ns() // 1000, step.description))
            conn.execute(f"PRAGMA user_version = {step.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply every migration newer than the database, each in its own transaction."""
    version = schema_version(conn)
    if version > LATEST_VERSION:
        check_version(conn, path)
    apply_migrations(conn, MIGRATIONS, version)
