"""`make run` at any hour: the demo's loading service keeps the real time while it is open
for the next hour, else starts its clock at the first opening that is."""

from __future__ import annotations

from datetime import datetime

import pytest

from cardap_sim.demo import service_clock
from cardap_sim.loadsvc.hours import JST


def jst(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=JST)


@pytest.mark.parametrize(("now", "start"), [
    ("2026-11-24 10:00", None),                   # open, and for the next hour
    ("2026-11-24 20:59", None),
    ("2026-11-24 21:30", "2026-11-25 08:00"),     # closes within the hour
    ("2026-11-24 23:10", "2026-11-25 08:00"),     # closed for the night
    ("2026-11-25 07:30", "2026-11-25 08:00"),
    ("2026-12-28 21:30", "2027-01-04 08:00"),     # the year-end closure follows
    ("2027-01-01 12:00", "2027-01-04 08:00"),
])
def test_the_demo_service_clock(now: str, start: str | None) -> None:
    got = service_clock(jst(now))
    assert got == (jst(start) if start else None)
