"""The roster database: connection (WAL, synchronous=FULL) and forward-only migrations.

As in `cardapd.store.db`, `PRAGMA user_version` holds the schema version and the
`schema_version` table its history; a database from a newer daemon is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cardapd.errors import StoreError
from cardapd.store.db import BUSY_TIMEOUT_MS, Migration, apply_migrations

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "roster: organisations, operators, permitted APs, preset sets", (
        """CREATE TABLE schema_version (
               version INTEGER PRIMARY KEY,
               applied_us INTEGER NOT NULL,
               description TEXT NOT NULL
           ) STRICT""",
        """CREATE TABLE organisations (
               organisation TEXT PRIMARY KEY,
               display_name TEXT NOT NULL,
               created_us INTEGER NOT NULL
           ) STRICT""",
        """CREATE TABLE operators (
               organisation TEXT NOT NULL REFERENCES organisations(organisation),
               operator_id TEXT NOT NULL,
               display_name TEXT NOT NULL,
               rights TEXT NOT NULL,
               enabled INTEGER NOT NULL DEFAULT 1,
               administrator INTEGER NOT NULL DEFAULT 0,
               locked INTEGER NOT NULL DEFAULT 0,
               failed_password_tries INTEGER NOT NULL DEFAULT 0,
               enrolled_fingers TEXT NOT NULL DEFAULT '',
               password_hash TEXT,
               approved_by TEXT,
               approval_reason TEXT,
               approved_at_us INTEGER,
               expires_at_us INTEGER,
               created_us INTEGER NOT NULL,
               updated_us INTEGER NOT NULL,
               PRIMARY KEY (organisation, operator_id)
           ) STRICT""",
        """CREATE TABLE organisation_aps (
               organisation TEXT NOT NULL REFERENCES organisations(organisation),
               ap_id TEXT NOT NULL,
               PRIMARY KEY (organisation, ap_id)
           ) STRICT""",
        """CREATE TABLE presets (
               organisation TEXT NOT NULL REFERENCES organisations(organisation),
               name TEXT NOT NULL,
               position INTEGER NOT NULL,
               ap_id TEXT NOT NULL,
               PRIMARY KEY (organisation, name, position)
           ) STRICT""",
    )),
)

LATEST_VERSION = MIGRATIONS[-1].version


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the roster database at `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open roster {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"roster {path}: {exc}") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply every newer migration, each in one transaction with its version bump."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > LATEST_VERSION:
        raise StoreError(f"roster {path}: schema version {version} is newer than this "
                         f"daemon understands ({LATEST_VERSION}); refusing to touch it")
    apply_migrations(conn, MIGRATIONS, version)
