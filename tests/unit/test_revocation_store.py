"""The revocation store and service: statuses, local suspensions, feed age, stale policy."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import pytest

from cardap.v1 import cards_pb2, loading_pb2
from cardapd.config import RevocationConfig
from cardapd.domain import OpContext
from cardapd.reads.revocation import PulledFeed, Revocation, RevocationFeedStale
from cardapd.reads.revocation_store import FeedEntry, IdStatus, RevocationStore
from cardapd.servicelink.convert import revocation_feed
from cardapd.telemetry.metrics import Metrics
from cardapd.telemetry.recorder import Recorder

AID = "D392F000410A0002"
U1, U2, U3 = "000000000001C", "000000000002Q", "0000000000032"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lookup_rules(tmp_path: Path) -> None:
    clock = Clock()
    store = RevocationStore(tmp_path / "r.db", clock)
    assert store.lookup("org-a", AID, U1).status is IdStatus.UNKNOWN
    assert store.lookup("org-a", AID, U1).feed_age_s is None
    store.apply("org-a", 2, [FeedEntry(AID, U1, IdStatus.SUSPENDED, 1),
                             FeedEntry(AID.lower(), U2, IdStatus.ABOLISHED, 2)],
                generated_at="x", replace=True)
    clock.t += 30
    found = store.lookup("org-a", AID, U1)
    assert (found.status, found.feed_age_s) == (IdStatus.SUSPENDED, 30.0)
    assert store.lookup("org-a", AID, U2).status is IdStatus.ABOLISHED
    assert store.lookup("org-a", AID, U3).status is IdStatus.IN_OPERATION
    assert store.lookup("org-b", AID, U3).status is IdStatus.UNKNOWN
    # local suspension: at once, never hides an abolition, resume lifts it
    assert store.set_local("org-a", AID, U3, suspended=True, reason="lost", actor="ops")
    assert not store.set_local("org-a", AID, U3, suspended=True, reason="lost", actor="ops")
    assert store.lookup("org-a", AID, U3).status is IdStatus.SUSPENDED
    store.set_local("org-a", AID, U2, suspended=True, reason="", actor="ops")
    assert store.lookup("org-a", AID, U2).status is IdStatus.ABOLISHED
    assert store.set_local("org-a", AID, U3, suspended=False, reason="", actor="ops")
    assert store.lookup("org-a", AID, U3).status is IdStatus.IN_OPERATION
    # incremental apply keeps old entries, replace drops them
    store.apply("org-a", 3, [FeedEntry(AID, U1, IdStatus.IN_OPERATION, 3)], generated_at="y",
                replace=False)
    assert store.lookup("org-a", AID, U1).status is IdStatus.IN_OPERATION
    assert store.lookup("org-a", AID, U2).status is IdStatus.ABOLISHED
    store.apply("org-a", 1, [], generated_at="z", replace=True)
    assert store.lookup("org-a", AID, U1).status is IdStatus.IN_OPERATION
    # U2's abolition is gone from the rebuilt feed: its local suspension shows again
    assert store.lookup("org-a", AID, U2).status is IdStatus.SUSPENDED
    state = store.feed("org-a")
    assert state is not None
    assert state.version == 1
    store.close()


def test_local_suspension_is_durable(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path / "r.db")
    store.set_local("org-a", AID, U1, suspended=True, reason="", actor="ops")
    store.close()
    again = RevocationStore(tmp_path / "r.db")
    assert again.lookup("org-a", AID, U1).status is IdStatus.SUSPENDED
    again.close()


class Audit:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, Mapping[str, object]]] = []

    async def record(self, ctx: OpContext | None, operation: str, *, result: str,
                     reason: str = "", reader: str = "", card_id: str = "",
                     detail: Mapping[str, object] | None = None,
                     durable: bool = False) -> int:
        self.rows.append((operation, result, dict(detail or {})))
        return len(self.rows)

    def head(self) -> int:
        return len(self.rows)


class Source:
    def __init__(self) -> None:
        self.version = 2
        self.calls: list[int] = []

    async def revocation_feed(self, organisation: str, since_version: int) -> PulledFeed:
        """The loading service's answer as the link adapter hands it on."""
        self.calls.append(since_version)
        feed = loading_pb2.RevocationFeed(version=self.version, organisation=organisation)
        feed.generated_at.FromDatetime(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        if since_version < 1:
            feed.entries.add(aid=AID, user_id=U1, status=cards_pb2.USER_ID_STATUS_SUSPENDED,
                             version=1)
        if since_version < 2 <= self.version:
            feed.entries.add(aid=AID, user_id=U2, status=cards_pb2.USER_ID_STATUS_ABOLISHED,
                             version=2)
        return revocation_feed(organisation, feed)


def _service(tmp_path: Path, policy: str, max_age: float) -> tuple[Revocation, Source, Audit]:
    source, audit = Source(), Audit()
    cfg = RevocationConfig(86400.0, max_age, "deny" if policy == "deny"
                           else "allow_with_warning")
    rev = Revocation(RevocationStore(tmp_path / "r.db"), source, ["org-a"], cfg,
                     Recorder(audit, Metrics()))
    return rev, source, audit


def test_sync_and_policies(tmp_path: Path) -> None:
    async def run() -> None:
        rev, source, audit = _service(tmp_path, "deny", 3600)
        aid = bytes.fromhex(AID)
        with pytest.raises(RevocationFeedStale):
            await rev.precheck("org-a")  # never pulled
        result = await rev.sync(OpContext("ops", "r1"))
        assert result.entries == 2
        await rev.precheck("org-a")
        view = await rev.status("org-a", aid, U1)
        assert (view.status, view.stale) == (IdStatus.SUSPENDED, False)
        await rev.sync(None)  # incremental: asks since version 2
        source.version = 1  # the service's feed was rebuilt: pulled again from 0
        await rev.sync(None)
        assert source.calls == [0, 2, 2, 0]
        assert (await rev.status("org-a", aid, U2)).status is IdStatus.IN_OPERATION
        await rev.set_local(OpContext("ops", "r2"), organisation="org-a", aid=aid,
                            user_id=U3, suspend=True, reason="lost")
        assert (await rev.status("org-a", aid, U3)).status is IdStatus.SUSPENDED
        assert [r[0] for r in audit.rows].count("revocation_sync") == 3
        assert ("set_user_id_status", "ok") in [(r[0], r[1]) for r in audit.rows]
        await rev.stop()

        rev, _, _ = _service(tmp_path / "w", "allow", 0.001)
        (tmp_path / "w").mkdir(exist_ok=True)
        await rev.sync(None)
        await asyncio.sleep(0.01)
        view = await rev.status("org-a", aid, U1)
        assert view.stale
        assert "revocation feed" in view.warning
        assert view.status is IdStatus.SUSPENDED
        await rev.stop()

    (tmp_path / "w").mkdir()
    asyncio.run(run())
