"""Revocation: pull each organisation's feed on a schedule and on demand, answer status
lookups with the feed's age, apply the stale policy, and suspend/resume user IDs locally.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cardapd.config import RevocationConfig
from cardapd.domain import IdStatus, OpContext
from cardapd.errors import CardapError, InvalidArgument, ServiceUnavailable
from cardapd.myna.userid import is_user_id_text
from cardapd.mynumber import UserIdText, aid_text
from cardapd.reads.revocation_store import FeedEntry, Lookup, RevocationStore
from cardapd.telemetry.recorder import Recorder

log = logging.getLogger(__name__)

RETRY_S = 300.0


class RevocationFeedStale(CardapError):
    """The feed is older than max_age_s (or was never pulled) and the policy is "deny"."""

    reason = "REVOCATION_FEED_STALE"


@dataclass(frozen=True)
class PulledFeed:
    """One pull of an organisation's feed: its version, its time and the entries changed
    after the version asked for (all of them from version 0)."""

    organisation: str
    version: int
    generated_at: dt.datetime
    entries: tuple[FeedEntry, ...]


class FeedSource(Protocol):
    """Where feeds come from (the loading service, over the link adapter)."""

    async def revocation_feed(self, organisation: str, since_version: int) -> PulledFeed:
        """The entries of `organisation`'s feed changed after `since_version`."""
        ...


@dataclass(frozen=True)
class StatusView:
    """What a read returns about revocation."""

    status: IdStatus
    feed_age_s: int
    stale: bool
    warning: str = ""


@dataclass(frozen=True)
class SyncResult:
    """What one pull stored: entries received and the newest feed time."""

    entries: int
    feed_time: dt.datetime | None


class Revocation:
    """The revocation feeds of the configured organisations and the local suspensions."""

    def __init__(self, store: RevocationStore, source: FeedSource | None,
                 organisations: Sequence[str], cfg: RevocationConfig,
                 recorder: Recorder) -> None:
        self.store = store
        self.source = source
        self.organisations = tuple(dict.fromkeys(organisations))
        self.cfg = cfg
        self.recorder = recorder
        self.metrics = recorder.metrics
        self._sync_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # When each feed was last pulled (store clock), for the metrics computed at scrape
        # time: the age grows between pulls without anything updating it.
        self._pulled_at: dict[str, float] = {}
        for org in self.organisations:
            state = store.feed(org)
            if state is not None:
                self._pulled_at[org] = state.pulled_at
            self._export(org)

    # ------------------------------------------------------------------ metrics

    def feed_age(self, organisation: str) -> float | None:
        """Seconds since `organisation`'s feed was last pulled (None: never)."""
        pulled = self._pulled_at.get(organisation)
        return None if pulled is None else max(0.0, time.time() - pulled)

    def feed_stale(self, organisation: str) -> bool:
        """Whether the feed is older than max_age_s or was never pulled (as for reads)."""
        age = self.feed_age(organisation)
        return age is None or age > self.cfg.max_age_s

    def _export(self, org: str) -> None:
        """Gauges of `org`'s feed, computed when the metrics are collected."""
        m = self.metrics
        m.revocation_feed_success.labels(org).set_function(
            lambda: self._pulled_at.get(org, 0.0))
        m.revocation_feed_stale.labels(org).set_function(lambda: float(self.feed_stale(org)))
        if org in self._pulled_at:  # no age before the first pull (stale says so)
            m.revocation_feed_age.labels(org).set_function(
                lambda: self.feed_age(org) or 0.0)

    # ------------------------------------------------------------------ lookups

    async def precheck(self, organisation: str) -> None:
        """Refuse before touching the card when the feed is stale and the policy denies."""
        if self.cfg.stale_policy != "deny":
            return
        state = await asyncio.to_thread(self.store.feed, organisation)
        age = None if state is None else time.time() - state.pulled_at
        if age is None or age > self.cfg.max_age_s:
            raise self._stale_error(organisation, age)

    async def status(self, organisation: str, aid: bytes, user_id: str) -> StatusView:
        """The user ID's status with the feed's age; RevocationFeedStale under "deny"."""
        found: Lookup = await asyncio.to_thread(self.store.lookup, organisation,
                                                aid.hex().upper(), user_id)
        age = found.feed_age_s
        stale = age is None or age > self.cfg.max_age_s
        if stale and self.cfg.stale_policy == "deny":
            raise self._stale_error(organisation, age)
        warning = ""
        if stale:
            warning = (f"the revocation feed of {organisation} was never pulled"
                       if age is None else
                       f"the revocation feed of {organisation} is {int(age)} s old "
                       f"(max_age_s {self.cfg.max_age_s:g})")
        return StatusView(found.status, int(age or 0), stale, warning)

    def _stale_error(self, organisation: str, age: float | None) -> RevocationFeedStale:
        what = "was never pulled" if age is None else f"is {int(age)} s old"
        return RevocationFeedStale(
            f"the revocation feed of {organisation} {what} (max_age_s "
            f"{self.cfg.max_age_s:g}) and stale_policy is \"deny\"",
            metadata={"organisation": organisation,
                      "feed_age_s": "" if age is None else str(int(age))})

    # ------------------------------------------------------------------ pulling

    async def sync(self, ctx: OpContext | None) -> SyncResult:
        """Pull every configured organisation's feed now (audited); the first failure raises."""
        start = time.perf_counter()
        try:
            if self.source is None:
                raise ServiceUnavailable("no loading service is configured ([loading] "
                                         "address): the revocation feed cannot be pulled",
                                         reason="LOADING_SERVICE_NOT_CONFIGURED")
            if not self.organisations:
                raise InvalidArgument("no organisation is configured ([[read.aps]])",
                                      reason="NO_ORGANISATION")
            async with self._sync_lock:
                total, newest = 0, None
                for org in self.organisations:
                    n, when = await self._pull(org)
                    total += n
                    newest = when if newest is None or when > newest else newest
        except CardapError as exc:
            await self._finish(ctx, "revocation_sync", start, exc, {})
            raise
        await self._finish(ctx, "revocation_sync", start, None,
                           {"entries": total, "organisations": list(self.organisations)})
        return SyncResult(total, newest)

    async def _pull(self, org: str) -> tuple[int, dt.datetime]:
        """Pull one organisation's changes (everything again if the service's feed reset)."""
        assert self.source is not None
        state = await asyncio.to_thread(self.store.feed, org)
        since = 0 if state is None else state.version
        feed = await self.source.revocation_feed(org, since)
        replace = since == 0
        if feed.version < since:  # the service's feed was rebuilt: start over
            feed = await self.source.revocation_feed(org, 0)
            replace = True
        entries = [e for e in feed.entries if is_user_id_text(e.user_id)]
        when = feed.generated_at
        n = await asyncio.to_thread(self.store.apply, org, feed.version, entries,
                                    generated_at=when.isoformat(), replace=replace)
        stored = await asyncio.to_thread(self.store.feed, org)
        if stored is not None:
            self._pulled_at[org] = stored.pulled_at
            self._export(org)
        log.info("revocation feed of %s: version %d, %d entries stored", org, feed.version, n)
        return n, when

    def start(self) -> None:
        """Start the schedule: pull now if the feed is due, then every interval_s."""
        if self.source is not None and self.organisations and self._task is None:
            self._task = asyncio.ensure_future(self._schedule())

    def reconfigure(self, source: FeedSource | None, organisations: Sequence[str],
                    cfg: RevocationConfig) -> None:
        """A reloaded configuration (D19): lookups and the stale policy use it at once; a
        running schedule restarts (unless a pull is under way: it reads the new interval
        after it), so a new interval or organisation counts from now."""
        self.source, self.cfg = source, cfg
        self.organisations = tuple(dict.fromkeys(organisations))
        for org in self.organisations:
            if org not in self._pulled_at:
                state = self.store.feed(org)
                if state is not None:
                    self._pulled_at[org] = state.pulled_at
            self._export(org)
        if self._task is not None and not self._sync_lock.locked():
            self._task.cancel()
            self._task = None
        self.start()

    async def stop(self) -> None:
        """Stop the schedule and close the store."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.store.close()

    async def _schedule(self) -> None:
        while True:
            due = await asyncio.to_thread(self._seconds_until_due)
            if due > 0:
                await asyncio.sleep(due)
            try:
                await self.sync(None)
                wait = self.cfg.interval_s
            except CardapError as exc:
                log.warning("scheduled revocation pull failed: %s", exc.message)
                wait = min(self.cfg.interval_s, RETRY_S)
            await asyncio.sleep(wait)

    def _seconds_until_due(self) -> float:
        """Seconds until the oldest configured feed is interval_s old (0: now)."""
        ages = []
        for org in self.organisations:
            state = self.store.feed(org)
            if state is None:
                return 0.0
            ages.append(time.time() - state.pulled_at)
        return max(0.0, self.cfg.interval_s - max(ages))

    # ------------------------------------------------------------------ local status

    async def set_local(self, ctx: OpContext, *, organisation: str, aid: bytes, user_id: str,
                        suspend: bool, reason: str) -> bool:
        """Suspend or resume a user ID locally at once (durably audited). `aid` is one the
        configuration names, or one the caller checked as free text (D59)."""
        start = time.perf_counter()
        detail: dict[str, object] = {"organisation": organisation, "aid": aid_text(aid),
                                     "user_id": UserIdText(user_id),
                                     "status": "suspended" if suspend else "in_operation",
                                     "reason": reason}
        try:
            changed = await asyncio.to_thread(
                self.store.set_local, organisation, aid.hex().upper(), user_id,
                suspended=suspend, reason=reason, actor=ctx.actor)
        except CardapError as exc:
            await self._finish(ctx, "set_user_id_status", start, exc, detail)
            raise
        await self._finish(ctx, "set_user_id_status", start, None,
                           {**detail, "changed": changed}, durable=True)
        return changed

    async def _finish(self, ctx: OpContext | None, operation: str, start: float,
                      exc: CardapError | None, detail: dict[str, object], *,
                      durable: bool = False) -> None:
        await self.recorder.finish(ctx, operation, start, exc, detail=detail, durable=durable)
