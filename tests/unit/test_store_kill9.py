"""An append the caller saw succeed is in the log after `kill -9`, and the chain verifies."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cardapd.audit import verify

CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from cardapd.audit import AsyncAuditLog, AuditEntry, Durability

    async def worker(log, w):
        i = 0
        while True:
            i += 1
            d = Durability.POWER if i % 10 == 0 else Durability.PROCESS
            rec = await log.append(AuditEntry("read_user_id", "ok", actor=f"w{w}",
                                              detail={"i": i}), d)
            sys.stdout.write(f"{rec.seq}\\n")
            sys.stdout.flush()

    async def main():
        log = AsyncAuditLog(Path(sys.argv[1]))
        await log.open()
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        await asyncio.gather(*(worker(log, w) for w in range(8)))

    asyncio.run(main())
""")


def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random()
    acknowledged: set[int] = set()
    for round_ in range(4):
        out_path = tmp_path / f"out{round_}.txt"
        with out_path.open("wb") as out:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=out,
                                     env=env)
            deadline = time.monotonic() + 20
            while b"ready" not in out_path.read_bytes():
                assert child.poll() is None, "the child died before it was ready"
                assert time.monotonic() < deadline, "the child did not get ready"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.6))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        text = out_path.read_text()
        complete = text[: text.rfind("\n") + 1].splitlines()[1:]  # a torn last line is not ack
        printed = {int(line) for line in complete}
        assert printed, "the child acknowledged nothing before the kill"
        acknowledged |= printed
        conn = sqlite3.connect(db)
        stored = {row[0] for row in conn.execute("SELECT seq FROM audit")}
        conn.close()
        missing = acknowledged - stored
        assert not missing, f"round {round_}: acknowledged but lost: {sorted(missing)[:10]}"
        result = verify(db)
        assert result.ok, result
        assert result.rows_checked == len(stored)
