"""When the loading service takes card sessions, known before anyone waits at the counter.

The service publishes its daily hours, closures and announced maintenance windows with its
own clock (`GetServiceSchedule`). `ServiceCalendar` fetches it at start and then every
`[loading] schedule_interval_s` (RETRY_S while it fails), keeps the last one in memory and in
`<state_dir>/service-schedule.json` (so a kiosk started while the link is down still knows
the hours), measures the terminal's clock offset against the service (the midpoint of the
call, NTP-style) and answers, on the service's clock: open now or not, the next opening or
closing, the next maintenance (docs/decisions.md D53).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cardapd.domain import ScheduleWindow, ServiceState
from cardapd.errors import CardapError

log = logging.getLogger(__name__)

REFRESH_S = 600.0
RETRY_S = 30.0
SEARCH_DAYS = 400


@dataclass(frozen=True)
class ServiceSchedule:
    """What the service said about its hours, at `service_time` on its clock."""

    service_time: dt.datetime
    utc_offset_minutes: int
    opens_at_minute: int
    closes_at_minute: int
    closures: tuple[ScheduleWindow, ...] = ()
    maintenance: tuple[ScheduleWindow, ...] = ()

    @property
    def zone(self) -> dt.timezone:
        """The zone the daily hours are given in."""
        return dt.timezone(dt.timedelta(minutes=self.utc_offset_minutes))

    def _closed_by(self, at: dt.datetime) -> ScheduleWindow | None:
        return next((w for w in (*self.closures, *self.maintenance) if w.covers(at)), None)

    def _in_hours(self, at: dt.datetime) -> bool:
        local = at.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return self.opens_at_minute <= minute < self.closes_at_minute

    def is_open(self, at: dt.datetime) -> bool:
        """Whether the service takes card sessions at `at` (its clock)."""
        return self._in_hours(at) and self._closed_by(at) is None

    def in_maintenance(self, at: dt.datetime) -> ScheduleWindow | None:
        """The announced maintenance window `at` falls in."""
        return next((w for w in self.maintenance if w.covers(at)), None)

    def next_opening(self, at: dt.datetime) -> dt.datetime | None:
        """The first time at or after `at` the service is open (None: none within 400 days)."""
        t = at
        limit = at + dt.timedelta(days=SEARCH_DAYS)
        while t < limit:
            window = self._closed_by(t)
            if window is not None:
                t = window.end
                continue
            if self._in_hours(t):
                return t
            local = t.astimezone(self.zone)
            day = local.date()
            if local.hour * 60 + local.minute >= self.opens_at_minute:
                day += dt.timedelta(days=1)
            t = dt.datetime.combine(day, dt.time(0), self.zone) + dt.timedelta(
                minutes=self.opens_at_minute)
        return None

    def next_closing(self, at: dt.datetime) -> dt.datetime | None:
        """While open: when it closes next (the end of the day's hours or the start of a
        closure or maintenance window, whichever comes first); None when closed."""
        if not self.is_open(at):
            return None
        t = at
        for _ in range(SEARCH_DAYS):
            local = t.astimezone(self.zone)
            end_of_day = dt.datetime.combine(local.date(), dt.time(0), self.zone) + \
                dt.timedelta(minutes=self.closes_at_minute)
            starts = [w.start for w in (*self.closures, *self.maintenance) if t < w.start]
            candidate = min([end_of_day, *starts])
            if not self.is_open(candidate):
                return candidate
            t = candidate  # open around the clock: the day's end is no closing
        return None

    def next_maintenance(self, at: dt.datetime) -> ScheduleWindow | None:
        """The announced maintenance window in progress or next, if any."""
        ahead = sorted((w for w in self.maintenance if w.end > at), key=lambda w: w.start)
        return ahead[0] if ahead else None

    # ------------------------------------------------------------------ the cache file

    def to_json(self) -> dict[str, Any]:
        """The cache file's content."""
        def window(w: ScheduleWindow) -> dict[str, Any]:
            return {"start": w.start.isoformat(), "end": w.end.isoformat(),
                    "description": w.description,
                    "announced_at": w.announced_at.isoformat() if w.announced_at else None}
        return {"service_time": self.service_time.isoformat(),
                "utc_offset_minutes": self.utc_offset_minutes,
                "opens_at_minute": self.opens_at_minute,
                "closes_at_minute": self.closes_at_minute,
                "closures": [window(w) for w in self.closures],
                "maintenance": [window(w) for w in self.maintenance]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServiceSchedule:
        """Inverse of to_json (ValueError, KeyError or TypeError when malformed)."""
        def window(w: dict[str, Any]) -> ScheduleWindow:
            announced = w.get("announced_at")
            return ScheduleWindow(dt.datetime.fromisoformat(w["start"]),
                                  dt.datetime.fromisoformat(w["end"]), str(w["description"]),
                                  dt.datetime.fromisoformat(announced) if announced else None)
        return cls(dt.datetime.fromisoformat(d["service_time"]), int(d["utc_offset_minutes"]),
                   int(d["opens_at_minute"]), int(d["closes_at_minute"]),
                   tuple(window(w) for w in d["closures"]),
                   tuple(window(w) for w in d["maintenance"]))


@dataclass(frozen=True)
class ScheduleFetch:
    """One GetServiceSchedule: the schedule, and the terminal's clock around the call."""

    schedule: ServiceSchedule
    sent_at: float  # time.time() just before the call
    received_at: float  # ... and just after the answer

    @property
    def clock_offset_s(self) -> float:
        """The service's clock minus this terminal's, at the call's midpoint."""
        return self.schedule.service_time.timestamp() - (self.sent_at + self.received_at) / 2


class ScheduleSource(Protocol):
    """Where the schedule comes from (the loading service link)."""

    @property
    def configured(self) -> bool:
        """Whether a loading service is configured."""
        ...

    async def schedule(self) -> ScheduleFetch:
        """Fetch the service's schedule now."""
        ...


class ServiceCalendar:
    """The cached schedule, refreshed in the background (`refresh` is a Metrics check)."""

    def __init__(self, source: Callable[[], ScheduleSource], path: Path,
                 on_fetch: Callable[[ScheduleFetch], None] | None = None,
                 interval_s: Callable[[], float] = lambda: REFRESH_S) -> None:
        self._source = source
        self._interval_s = interval_s
        self.path = path
        self._on_fetch = on_fetch
        self.schedule: ServiceSchedule | None = None
        self.clock_offset_s = 0.0
        self.fetched_at = 0.0
        self._load()

    def _load(self) -> None:
        """The schedule cached by an earlier run (ignored when unreadable)."""
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            self.schedule = ServiceSchedule.from_json(d["schedule"])
            self.clock_offset_s = float(d["clock_offset_s"])
            self.fetched_at = float(d["fetched_at"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the cached service schedule %s: %s", self.path, exc)

    def _save(self) -> None:
        text = json.dumps({"schedule": self.schedule.to_json() if self.schedule else None,
                           "clock_offset_s": self.clock_offset_s,
                           "fetched_at": self.fetched_at})
        fd, tmp = tempfile.mkstemp(prefix=".service-schedule.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            log.warning("could not cache the service schedule in %s: %s", self.path, exc)

    def service_now(self) -> dt.datetime:
        """Now on the service's clock (this terminal's clock plus the measured offset)."""
        return dt.datetime.fromtimestamp(time.time() + self.clock_offset_s, dt.UTC)

    def state(self) -> ServiceState:
        """Open now or not, the next opening or closing and maintenance, on the service's
        clock."""
        sched = self.schedule
        if sched is None:
            return ServiceState(known=False)
        now = self.service_now()
        is_open = sched.is_open(now)
        return ServiceState(
            known=True, open=is_open, maintenance=sched.in_maintenance(now),
            next_opening=None if is_open else sched.next_opening(now),
            next_closing=sched.next_closing(now), next_maintenance=sched.next_maintenance(now),
            clock_offset_s=self.clock_offset_s, fetched_at=self.fetched_at)

    async def refresh(self) -> float | None:
        """Fetch the schedule now; the seconds until the next fetch (None: no service)."""
        source = self._source()
        retry = min(RETRY_S, self._interval_s())
        if not source.configured:
            return retry  # a reload may configure one
        try:
            fetched = await source.schedule()
        except CardapError as exc:
            log.info("service schedule not refreshed: %s", exc.message)
            return retry
        self.schedule = fetched.schedule
        self.clock_offset_s = fetched.clock_offset_s
        self.fetched_at = fetched.received_at
        if self._on_fetch is not None:
            self._on_fetch(fetched)
        self._save()
        return self._interval_s()
