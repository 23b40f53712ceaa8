"""Service hours (08:00-22:00 JST, closed 29 Dec - 3 Jan) and the clocks."""

from __future__ import annotations

import datetime as dt

import pytest

from cardap_sim.loadsvc.hours import (
    JST,
    FixedClock,
    Maintenance,
    OffsetClock,
    ServiceHours,
    parse_closed,
    parse_fake_now,
    parse_hours,
    parse_maintenance,
)

H = ServiceHours()


def t(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=JST)


@pytest.mark.parametrize(("at", "open_"), [
    (t(2026, 11, 23, 8, 0), True),
    (t(2026, 11, 23, 7, 59), False),
    (t(2026, 11, 23, 21, 59), True),
    (t(2026, 11, 23, 22, 0), False),
    (t(2026, 12, 28, 21, 59), True),
    (t(2026, 12, 29, 10, 0), False),
    (t(2027, 1, 3, 12, 0), False),
    (t(2027, 1, 4, 8, 0), True),
])
def test_is_open(at: dt.datetime, open_: bool) -> None:
    assert H.is_open(at) is open_


@pytest.mark.parametrize(("at", "nxt"), [
    (t(2026, 11, 23, 22, 0), t(2026, 11, 24, 8, 0)),
    (t(2026, 11, 23, 6, 30), t(2026, 11, 23, 8, 0)),
    (t(2026, 12, 28, 22, 0), t(2027, 1, 4, 8, 0)),
    (t(2026, 12, 29, 9, 0), t(2027, 1, 4, 8, 0)),
    (t(2027, 1, 3, 23, 0), t(2027, 1, 4, 8, 0)),
    (t(2026, 11, 23, 10, 0), t(2026, 11, 23, 10, 0)),
])
def test_next_opening(at: dt.datetime, nxt: dt.datetime) -> None:
    assert H.next_opening(at) == nxt


def test_other_timezones_are_converted() -> None:
    utc = dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.UTC)  # 09:00 JST
    assert H.is_open(utc)
    assert not H.is_open(dt.datetime(2026, 11, 23, 13, 0, tzinfo=dt.UTC))  # 22:00 JST


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        H.is_open(dt.datetime(2026, 11, 23, 10))
    with pytest.raises(ValueError, match="timezone"):
        parse_fake_now("2026-11-23T10:00:00")


def test_clocks() -> None:
    c = FixedClock(t(2026, 11, 23, 10))
    c.set(t(2026, 11, 23, 23))
    assert c.now() == t(2026, 11, 23, 23)
    o = OffsetClock(parse_fake_now("2026-11-23T10:00:00+09:00"))
    assert t(2026, 11, 23, 10) <= o.now() < t(2026, 11, 23, 10, 1)


UPGRADE = Maintenance(t(2026, 12, 1, 1), t(2026, 12, 1, 9), "system upgrade")
M = ServiceHours(maintenance=(UPGRADE,))


def test_maintenance_closes_the_service_and_moves_the_next_opening() -> None:
    assert not M.is_open(t(2026, 12, 1, 8, 30))
    assert M.next_opening(t(2026, 12, 1, 2)) == t(2026, 12, 1, 9)
    assert M.next_opening(t(2026, 11, 30, 23)) == t(2026, 12, 1, 9)
    assert M.is_open(t(2026, 12, 1, 9))


def test_maintenance_is_announced_ten_business_days_ahead() -> None:
    # Tue 1 Dec 2026 minus 10 weekdays (Mon 30 Nov ... Tue 17 Nov): 00:00 on Tue 17 Nov.
    assert M.announced_at(UPGRADE) == t(2026, 11, 17, 0)
    assert M.announced(t(2026, 11, 16, 23, 59)) == []
    [w] = M.announced(t(2026, 11, 17, 0))
    assert (w.start, w.end, w.description, w.announced_at) == (
        UPGRADE.start, UPGRADE.end, "system upgrade", t(2026, 11, 17, 0))
    assert M.announced(t(2026, 12, 1, 9)) == []  # over
    # closed days are not business days: announced earlier across the New Year
    jan = Maintenance(t(2027, 1, 8, 1), t(2027, 1, 8, 5))
    assert ServiceHours(maintenance=(jan,)).announced_at(jan) == t(2026, 12, 21, 0)


def test_closures_and_configurable_hours() -> None:
    [w] = H.closures(t(2026, 11, 24, 10), days=60)
    assert (w.start, w.end) == (t(2026, 12, 29, 0), t(2027, 1, 4, 0))
    late = ServiceHours(open_hour=9, close_hour=17, closed=(((5, 3), (5, 5)),))
    assert late.is_open(t(2026, 5, 6, 9))
    assert not late.is_open(t(2026, 5, 4, 12))
    assert late.is_open(t(2026, 12, 30, 10))  # the New Year closure is not in this one
    assert parse_hours("08:00-22:00") == (8, 22)
    assert parse_closed("12-29:01-03") == ((12, 29), (1, 3))
    assert parse_maintenance("2026-12-01T01:00+09:00/2026-12-01T09:00+09:00/x").description \
        == "x"
    for bad in ("8-22", "08:30-22:00"):
        with pytest.raises(ValueError, match="service hours"):
            parse_hours(bad)
    with pytest.raises(ValueError, match="closed days"):
        parse_closed("13-01:01-01")
