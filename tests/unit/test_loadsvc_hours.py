"""Service hours (08:00-22:00 JST, closed 29 Dec - 3 Jan) and the clocks."""

from __future__ import annotations

import datetime as dt

import pytest

from cardap_sim.loadsvc.hours import JST, FixedClock, OffsetClock, ServiceHours, parse_fake_now

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
