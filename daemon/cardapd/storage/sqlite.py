"""The one way the daemon opens an SQLite store: WAL, versioned migrations, and a
durability chosen for each write, not for each store.

Every store (audit log, roster, operations journal, revocation feeds) declares a `Schema`
— its name and its forward-only `Migration`s, version 1 being the schema the store had
when migrations were introduced — and opens its file with `open_database`. That applies
every migration newer than the file, each in one transaction together with its version
bump, so a migration cut short by `kill -9` or a power loss leaves the file at the old
version or the new one, never between. A file written by a newer cardapd is refused with
an error that says so, rather than half understood.

The schema version lives twice, on purpose: `PRAGMA user_version` is what the code checks
(one integer in the file header) and the `schema_version` table keeps the history (when
each migration ran and what it did) for the operator.

Durability is a property of a write, because one store holds writes of different worth
(docs/decisions.md D8): `Durability.POWER` commits with `synchronous=FULL` (the WAL is
fsynced before the commit returns: the write survives a power loss); `Durability.PROCESS`
with `synchronous=NORMAL` (written to the OS, not fsynced: it survives `kill -9` of the
daemon, not a power loss). In WAL mode a later POWER commit hardens every earlier PROCESS
commit with it, so a power loss can only lose a suffix of PROCESS writes, never a hole.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardapd.errors import StoreError

BUSY_TIMEOUT_MS = 2000
"""How long a writer waits for a lock held by another connection before giving up."""

HISTORY_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_us INTEGER NOT NULL,
    description TEXT NOT NULL
) STRICT"""


class Durability(enum.Enum):
    """How hard a write must be committed before it returns (see the module docstring)."""

    PROCESS = "process"
    POWER = "power"

    @property
    def synchronous(self) -> str:
        """The `PRAGMA synchronous` level that gives this durability in WAL mode."""
        return "FULL" if self is Durability.POWER else "NORMAL"


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step of a schema: its target version and its statements."""

    version: int
    description: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Schema:
    """A store's name (for messages) and its migrations, in version order from 1."""

    name: str
    migrations: tuple[Migration, ...]
    foreign_keys: bool = False

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.name}: migrations must be numbered 1, 2, 3, …")

    @property
    def latest(self) -> int:
        """The version this code writes."""
        return self.migrations[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the file header (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def too_new(schema: Schema, path: Path, version: int) -> StoreError:
    """The error for a file written by a newer cardapd."""
    return StoreError(
        f"{schema.name} {path}: schema version {version} was written by a newer cardapd, "
        f"this one understands up to version {schema.latest}; refusing to open it (upgrade "
        "cardapd, or restore a backup made by this version)", reason="STORE_TOO_NEW",
        metadata={"store": schema.name, "version": str(version),
                  "supported": str(schema.latest)})


def migrate(conn: sqlite3.Connection, schema: Schema, path: Path) -> int:
    """Apply every migration newer than the file, each in its own transaction with its
    version bump; returns the version before. Refuses a file from a newer cardapd."""
    before = schema_version(conn)
    if before > schema.latest:
        raise too_new(schema, path, before)
    for step in schema.migrations:
        if step.version <= before:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            now = schema_version(conn)
            if now >= step.version:
                conn.execute("ROLLBACK")
                if now > schema.latest:
                    raise too_new(schema, path, now)
                continue
            conn.execute(HISTORY_TABLE)
            for statement in step.statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                         (step.version, time.time_ns() // 1000, step.description))
            conn.execute(f"PRAGMA user_version = {step.version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return before


class Database:
    """One store's connection: a lock, write transactions at a chosen durability, reads.

    The connection is shared by the threads that use the store (the store's writer thread,
    `asyncio.to_thread` workers), always under the lock: never two threads in it at once.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, schema: Schema) -> None:
        self.conn = conn
        self.path = path
        self.schema = schema
        self.lock = threading.RLock()
        self._synchronous: Durability | None = None

    def set_durability(self, durability: Durability) -> None:
        """Make the next commits `durability` (caller holds the lock)."""
        if durability is not self._synchronous:
            self.conn.execute(f"PRAGMA synchronous = {durability.synchronous}")
            self._synchronous = durability

    def fail(self, exc: BaseException) -> StoreError:
        """A StoreError naming this store for an SQLite failure."""
        return StoreError(f"{self.schema.name} {self.path}: {exc}")

    @contextmanager
    def write(self, durability: Durability) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT) committed at `durability`;
        rolled back on any error; SQLite faults become StoreError."""
        with self.lock:
            conn = self.conn
            try:
                self.set_durability(durability)
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.fail(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise self.fail(exc) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query (a consistent snapshot)."""
        with self.lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self.fail(exc) from exc

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one query, or None."""
        rows = self.read(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        """Close the connection (the WAL stays valid; nothing committed is lost)."""
        with self.lock:
            self.conn.close()


def open_database(path: Path, schema: Schema, *, readonly: bool = False) -> Database:
    """Open `path` in WAL mode and bring it to `schema`'s latest version (read-only: check
    that it is at that version, and never write)."""
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                   isolation_level=None, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open {schema.name} {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if schema.foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            version = schema_version(conn)
            if version > schema.latest:
                raise too_new(schema, path, version)
            if version < schema.latest:
                raise StoreError(f"{schema.name} {path}: schema version {version}, expected "
                                 f"{schema.latest} (start cardapd once to migrate it)")
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{schema.name} {path}: cannot switch to WAL mode "
                                 f"(got {mode})")
            conn.execute(f"PRAGMA synchronous = {Durability.POWER.synchronous}")
            migrate(conn, schema, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{schema.name} {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    db = Database(conn, path, schema)
    if not readonly:
        db._synchronous = Durability.POWER
    return db
