"""The daemon's view of the service schedule: open now, next opening/closing/maintenance,
judged on the service's clock; the cache file; the clock offset."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest

from cardapd.domain import ScheduleWindow
from cardapd.errors import ServiceUnavailable
from cardapd.loading.schedule import ScheduleFetch, ServiceCalendar, ServiceSchedule

JST = dt.timezone(dt.timedelta(hours=9))


def t(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=JST)


NEW_YEAR = ScheduleWindow(t(2026, 12, 29, 0), t(2027, 1, 4, 0), "closed (New Year holidays)")
UPGRADE = ScheduleWindow(t(2026, 12, 1, 1), t(2026, 12, 1, 9), "system upgrade",
                         t(2026, 11, 17, 0))
S = ServiceSchedule(t(2026, 11, 24, 10), 540, 8 * 60, 22 * 60, (NEW_YEAR,), (UPGRADE,))


@pytest.mark.parametrize(("at", "open_", "nxt", "closes"), [
    (t(2026, 11, 24, 10), True, None, t(2026, 11, 24, 22)),
    (t(2026, 11, 24, 22), False, t(2026, 11, 25, 8), None),
    (t(2026, 11, 25, 7, 59), False, t(2026, 11, 25, 8), None),
    (t(2026, 11, 30, 21), True, None, t(2026, 11, 30, 22)),
    (t(2026, 12, 1, 8, 30), False, t(2026, 12, 1, 9), None),  # inside the maintenance
    (t(2026, 12, 28, 21), True, None, t(2026, 12, 28, 22)),
    (t(2026, 12, 30, 10), False, t(2027, 1, 4, 8), None),  # the New Year closure
])
def test_open_next_opening_and_closing(at: dt.datetime, open_: bool,
                                       nxt: dt.datetime | None,
                                       closes: dt.datetime | None) -> None:
    assert S.is_open(at) is open_
    assert S.next_opening(at) == (at if open_ else nxt)
    assert S.next_closing(at) == closes


def test_maintenance_in_progress_and_next() -> None:
    assert S.next_maintenance(t(2026, 11, 24, 10)) == UPGRADE
    assert S.in_maintenance(t(2026, 12, 1, 2)) == UPGRADE
    assert S.next_maintenance(t(2026, 12, 1, 2)) == UPGRADE
    assert S.next_maintenance(t(2026, 12, 1, 9)) is None
    # open before the window: it closes at the window's start, not at 22:00
    early = ServiceSchedule(S.service_time, 540, 0, 24 * 60, (), (UPGRADE,))
    assert early.next_closing(t(2026, 11, 30, 23)) == UPGRADE.start


class Source:
    configured = True

    def __init__(self, fetch: ScheduleFetch | None) -> None:
        self.fetch = fetch

    async def schedule(self) -> ScheduleFetch:
        if self.fetch is None:
            raise ServiceUnavailable("down", reason="LOADING_SERVICE_UNAVAILABLE")
        return self.fetch


def test_calendar_measures_the_offset_judges_on_the_service_clock_and_caches(
        tmp_path: Path) -> None:
    now = time.time()
    service_now = t(2026, 12, 30, 10)  # the service's clock: in the New Year closure
    sched = ServiceSchedule(service_now, 540, 480, 1320, (NEW_YEAR,), ())
    fetched = ScheduleFetch(sched, now - 0.2, now)  # the midpoint is now - 0.1
    assert fetched.clock_offset_s == pytest.approx(service_now.timestamp() - (now - 0.1))
    path = tmp_path / "service-schedule.json"
    seen: list[ScheduleFetch] = []
    cal = ServiceCalendar(lambda: Source(fetched), path, seen.append, lambda: 42.0)
    assert not cal.state().known
    assert asyncio.run(cal.refresh()) == 42.0
    assert seen == [fetched]
    state = cal.state()
    assert (state.known, state.open, state.next_opening) == (True, False, t(2027, 1, 4, 8))
    assert state.clock_offset_s == pytest.approx(fetched.clock_offset_s)
    # a restarted daemon whose link is down still knows it from the cache
    again = ServiceCalendar(lambda: Source(None), path)
    assert asyncio.run(again.refresh()) == 30.0
    assert again.state().next_opening == t(2027, 1, 4, 8)
    assert again.schedule == sched


def test_a_broken_cache_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "service-schedule.json"
    path.write_text("{not json")
    assert not ServiceCalendar(lambda: Source(None), path).state().known
