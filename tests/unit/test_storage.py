"""The one SQLite layer: durability per write, versioned migrations that are atomic under
`kill -9`, and files from a newer cardapd refused."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cardapd.audit.log import AuditLog
from cardapd.audit.schema import AUDIT_SCHEMA
from cardapd.errors import StoreError
from cardapd.loading.journal import JOURNAL_SCHEMA, Journal
from cardapd.operators.roster.schema import ROSTER_SCHEMA
from cardapd.operators.roster.store import Roster
from cardapd.reads.revocation_store import REVOCATION_SCHEMA, RevocationStore
from cardapd.storage import Durability, Migration, Schema, open_database, schema_version

V1 = Migration(1, "first", ("CREATE TABLE t1 (x INTEGER)",))
TEST = Schema("test store", (V1,))


def test_durability_is_chosen_per_write(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db", TEST)
    try:
        for durability, level in ((Durability.PROCESS, 1), (Durability.POWER, 2),
                                  (Durability.PROCESS, 1)):
            with db.write(durability) as conn:
                conn.execute("INSERT INTO t1 VALUES (1)")
                assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert db.read("SELECT count(*) FROM t1") == [(3,)]
        assert db.read("PRAGMA journal_mode") == [("wal",)]
    finally:
        db.close()


def test_a_failed_write_is_rolled_back(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db", TEST)
    try:
        def insert_twice() -> None:
            with db.write(Durability.POWER) as conn:
                conn.execute("INSERT INTO t1 VALUES (1)")
                conn.execute("INSERT INTO nowhere VALUES (1)")

        with pytest.raises(StoreError, match="test store"):
            insert_twice()
        assert db.read("SELECT count(*) FROM t1") == [(0,)]
    finally:
        db.close()


def test_migrations_run_once_in_order_with_their_history(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    open_database(path, TEST).close()
    v2 = Schema("test store", (V1, Migration(2, "second", ("ALTER TABLE t1 ADD y TEXT",))))
    db = open_database(path, v2)
    db.close()
    db = open_database(path, v2)  # nothing left to do
    try:
        assert schema_version(db.conn) == 2
        history = db.read("SELECT version, description FROM schema_version ORDER BY version")
        assert history == [(1, "first"), (2, "second")]
    finally:
        db.close()


@pytest.mark.parametrize(("schema", "opener"), [
    (AUDIT_SCHEMA, lambda p: AuditLog(p).close()),
    (ROSTER_SCHEMA, lambda p: Roster(p).close()),
    (JOURNAL_SCHEMA, lambda p: Journal(p).close()),
    (REVOCATION_SCHEMA, lambda p: RevocationStore(p).close()),
], ids=["audit", "roster", "journal", "revocation"])
def test_every_store_refuses_a_file_from_a_newer_cardapd(tmp_path: Path, schema: Schema,
                                                          opener: object) -> None:
    path = tmp_path / "store.db"
    opener(path)  # type: ignore[operator]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.latest
        conn.execute(f"PRAGMA user_version = {schema.latest + 1}")
    with pytest.raises(StoreError) as info:
        opener(path)  # type: ignore[operator]
    err = info.value
    assert err.reason == "STORE_TOO_NEW"
    assert f"schema version {schema.latest + 1} was written by a newer cardapd" in err.message
    assert schema.name in err.message
    with sqlite3.connect(path) as conn:  # and nothing was touched
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.latest + 1


def test_read_only_open_never_migrates(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    open_database(path, TEST).close()
    v2 = Schema("test store", (V1, Migration(2, "second", ("ALTER TABLE t1 ADD y TEXT",))))
    with pytest.raises(StoreError, match="expected 2"):
        open_database(path, v2, readonly=True)


# A child process migrates a version-1 file through two slow steps; it is SIGKILLed at a
# random moment. Whatever the moment, the file is at version 1, 2 or 3 with exactly that
# version's tables and history, and opening it again finishes the job.
MIGRATING_CHILD = r"""
import sys
from pathlib import Path
from cardapd.storage import Migration, Schema, open_database
steps = (
    Migration(1, "first", ("CREATE TABLE t1 (x INTEGER)",)),
    Migration(2, "slow second", (
        "CREATE TABLE t2 (n INTEGER, pad TEXT)",
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300000) "
        "INSERT INTO t2 SELECT n, printf('%0100d', n) FROM c",
        "CREATE INDEX t2_n ON t2 (n)")),
    Migration(3, "slow third", (
        "CREATE TABLE t3 AS SELECT n, pad FROM t2",
        "CREATE INDEX t3_pad ON t3 (pad)")))
print("migrating", flush=True)
open_database(Path(sys.argv[1]), Schema("test store", steps)).close()
print("done", flush=True)
"""
ALL_STEPS = 3


def _state(path: Path) -> tuple[int, set[str], list[int]]:
    """(user_version, tables, versions in the history) of the file."""
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                             "'table' AND name LIKE 't_'")}
        history = [r[0] for r in conn.execute("SELECT version FROM schema_version "
                                              "ORDER BY version")]
    return version, tables, history


def test_a_migration_killed_midway_leaves_the_old_or_the_new_version(tmp_path: Path) -> None:
    seen: set[int] = set()
    rng = random.Random(11)
    for attempt in range(5):
        path = tmp_path / f"t{attempt}.db"
        open_database(path, TEST).close()
        child = subprocess.Popen([sys.executable, "-c", MIGRATING_CHILD, str(path)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "migrating"
        time.sleep(rng.uniform(0.05, 0.9))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        version, tables, history = _state(path)
        seen.add(version)
        assert history == list(range(1, version + 1))
        assert tables == {f"t{i}" for i in range(1, version + 1)}
        if version >= 2:
            with sqlite3.connect(path) as conn:
                assert conn.execute("SELECT count(*) FROM t2").fetchone()[0] == 300000
        finished = subprocess.run([sys.executable, "-c", MIGRATING_CHILD, str(path)],
                                  capture_output=True, text=True, timeout=120, check=True)
        assert finished.stdout.split() == ["migrating", "done"]
        assert _state(path)[0] == ALL_STEPS
    assert seen & {1, 2}, f"no kill landed inside a migration: {seen}"
