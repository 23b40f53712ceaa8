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
class ServiceHours:
    """Open `open_hour`:00 to `close_hour`:00 JST daily, closed over the New Year holidays."""

    open_hour: int = 8
    close_hour: int = 22

    @staticmethod
    def holiday(day: dt.date) -> bool:
        """True from 29 Dec to 3 Jan inclusive."""
        return (day.month == 12 and day.day >= 29) or (day.month == 1 and day.day <= 3)

    def is_open(self, at: dt.datetime) -> bool:
        """Whether the service takes card sessions at `at`."""
        local = _aware(at).astimezone(JST)
        if self.holiday(local.date()):
            return False
        return self.open_hour <= local.hour < self.close_hour

    def next_opening(self, at: dt.datetime) -> dt.datetime:
        """The next opening time at or after `at` (equal to `at` when open now), in JST."""
        local = _aware(at).astimezone(JST)
        if self.is_open(local):
            return local
        day = local.date()
        if local.hour >= self.close_hour or self.holiday(day):
            day += dt.timedelta(days=1)
        while self.holiday(day):
            day += dt.timedelta(days=1)
        return dt.datetime.combine(day, dt.time(self.open_hour), JST)
