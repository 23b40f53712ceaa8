"""Service hours (08:00-22:00 JST, closed 29 Dec - 3 Jan) and an injectable clock."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Protocol

JST = dt.timezone(dt.timedelta(hours=9), "JST")
FAKE_NOW_ENV = "CARDAP_LOADSVC_FAKE_NOW"


class Clock(Protocol):
    """Where the service reads the time (a test or a flag can replace it)."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> dt.datetime:
        """Now, in JST."""
        return dt.datetime.now(JST)


class FixedClock:
    """A clock that shows a set time until told otherwise (tests)."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = _aware(at)

    def set(self, at: dt.datetime) -> None:
        """Move the clock to `at`."""
        self.at = _aware(at)

    def now(self) -> dt.datetime:
        """The set time."""
        return self.at


class OffsetClock:
    """Starts at a given time and runs at real speed from there (`--fake-now`)."""

    def __init__(self, start: dt.datetime) -> None:
        self._start = _aware(start)
        self._t0 = time.monotonic()

    def now(self) -> dt.datetime:
        """The start time plus the real time elapsed since construction."""
        return self._start + dt.timedelta(seconds=time.monotonic() - self._t0)


def _aware(at: dt.datetime) -> dt.datetime:
    """Reject naive datetimes: a time without a zone is ambiguous for service hours."""
    if at.tzinfo is None:
        raise ValueError("times must carry a timezone (e.g. +09:00)")
    return at


def parse_fake_now(text: str) -> dt.datetime:
    """Parse an ISO 8601 time with offset, e.g. `2026-11-23T10:00:00+09:00`."""
    try:
        return _aware(dt.datetime.fromisoformat(text))
    except ValueError as exc:
        raise ValueError(f"fake time {text!r}: {exc}") from None


def clock_from(fake_now: str | None) -> Clock:
    """The clock for a `--fake-now` value (or the env var), else the system clock."""
    return OffsetClock(parse_fake_now(fake_now)) if fake_now else SystemClock()


@dataclass(frozen=True)
class Maintenance:
    """A planned maintenance window: the service takes no card session inside it."""

    start: dt.datetime
    end: dt.datetime
    description: str = "planned maintenance"

    def __post_init__(self) -> None:
        _aware(self.start)
        _aware(self.end)
        if self.end <= self.start:
            raise ValueError("a maintenance window ends after it starts")


@dataclass(frozen=True)
class Window:
    """A closure or an announced maintenance window, as the schedule reports it."""

    start: dt.datetime
    end: dt.datetime
    description: str
    announced_at: dt.datetime | None = None


@dataclass(frozen=True)
class ServiceHours:
    """Open `open_hour`:00 to `close_hour`:00 JST daily, closed on the `closed` days of the
    year (month, day) ranges — by default 29 Dec to 3 Jan — and during maintenance windows,
    each announced `announce_business_days` business days (weekdays that are not closed)
    before it starts (000 "システム運用": 8:00-22:00, 年末年始 12/29-1/3, 10営業日前)."""

    open_hour: int = 8
    close_hour: int = 22
    closed: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (((12, 29), (1, 3)),)
    maintenance: tuple[Maintenance, ...] = ()
    announce_business_days: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.open_hour < self.close_hour <= 24:
            raise ValueError("service hours: 0 <= open < close <= 24")

    def holiday(self, day: dt.date) -> bool:
        """True on a closed day of the year."""
        md = (day.month, day.day)
        for first, last in self.closed:
            if (first <= md <= last) if first <= last else (md >= first or md <= last):
                return True
        return False

    def in_maintenance(self, at: dt.datetime) -> Maintenance | None:
        """The maintenance window `at` falls in, if any."""
        return next((m for m in self.maintenance if m.start <= at < m.end), None)

    def is_open(self, at: dt.datetime) -> bool:
        """Whether the service takes card sessions at `at`."""
        local = _aware(at).astimezone(JST)
        if self.holiday(local.date()) or self.in_maintenance(local) is not None:
            return False
        return self.open_hour <= local.hour < self.close_hour

    def next_opening(self, at: dt.datetime) -> dt.datetime:
        """The next time at or after `at` the service is open (`at` when open now), JST."""
        local = _aware(at).astimezone(JST)
        for _ in range(800):
            if self.is_open(local):
                return local
            window = self.in_maintenance(local)
            if window is not None:
                local = window.end.astimezone(JST)
                continue
            day = local.date()
            if local.hour >= self.close_hour or self.holiday(day):
                day += dt.timedelta(days=1)
            while self.holiday(day):
                day += dt.timedelta(days=1)
            opening = dt.datetime.combine(day, dt.time(self.open_hour), JST)
            local = max(opening, local)
        raise ValueError("the service never opens")

    def business_day(self, day: dt.date) -> bool:
        """A weekday the service is not closed."""
        return day.weekday() < 5 and not self.holiday(day)

    def announced_at(self, m: Maintenance) -> dt.datetime:
        """When `m` is announced: 00:00 JST, `announce_business_days` business days
        before the day it starts."""
        day, left = m.start.astimezone(JST).date(), self.announce_business_days
        while left > 0:
            day -= dt.timedelta(days=1)
            if self.business_day(day):
                left -= 1
        return dt.datetime.combine(day, dt.time(0), JST)

    def announced(self, at: dt.datetime) -> list[Window]:
        """The maintenance windows announced by `at` and not over, soonest first."""
        return sorted((Window(m.start, m.end, m.description, self.announced_at(m))
                       for m in self.maintenance
                       if self.announced_at(m) <= at < m.end), key=lambda w: w.start)

    def closures(self, at: dt.datetime, days: int = 400) -> list[Window]:
        """The closed days from `at`'s day on, for `days` days, as whole-day ranges (JST)."""
        out: list[Window] = []
        day = _aware(at).astimezone(JST).date()
        end = day + dt.timedelta(days=days)
        while day < end:
            if self.holiday(day):
                first = day
                while self.holiday(day) and day < end:
                    day += dt.timedelta(days=1)
                out.append(Window(dt.datetime.combine(first, dt.time(0), JST),
                                  dt.datetime.combine(day, dt.time(0), JST),
                                  "closed (New Year holidays)"))
            day += dt.timedelta(days=1)
        return out


def parse_hours(text: str) -> tuple[int, int]:
    """`08:00-22:00` → (8, 22); whole hours only."""
    try:
        first, last = text.split("-")
        h1, m1 = (int(x) for x in first.split(":"))
        h2, m2 = (int(x) for x in last.split(":"))
    except ValueError:
        raise ValueError(f"service hours {text!r}: expected HH:00-HH:00") from None
    if m1 or m2:
        raise ValueError(f"service hours {text!r}: whole hours only")
    return h1, h2


def parse_closed(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """`12-29:01-03` → ((12, 29), (1, 3)): the closed days of every year, both included."""
    try:
        first, last = text.split(":")
        a = tuple(int(x) for x in first.split("-"))
        b = tuple(int(x) for x in last.split("-"))
        dt.date(2000, *a)
        dt.date(2000, *b)
    except (ValueError, TypeError):
        raise ValueError(f"closed days {text!r}: expected MM-DD:MM-DD") from None
    return (a[0], a[1]), (b[0], b[1])


def parse_maintenance(text: str) -> Maintenance:
    """`START/END or START/END/DESCRIPTION`, ISO 8601 times with their offsets."""
    parts = text.split("/", 2)
    if len(parts) < 2:
        raise ValueError(f"maintenance {text!r}: expected START/END or "
                         "START/END/DESCRIPTION")
    start, end = parse_fake_now(parts[0]), parse_fake_now(parts[1])
    return Maintenance(start, end, parts[2] if len(parts) == 3 else "planned maintenance")
