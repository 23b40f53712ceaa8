"""The kiosk knows before the holder waits (issue 17 point 4, D53), through the real stack.

The reference loading service publishes its hours (08:00-22:00), closures (29 Dec - 3 Jan)
and the maintenance windows announced 10 business days ahead, with its clock; the daemon
caches them, measures its clock offset (a metric) and GetStatus, WatchStatus and
`cardapctl status` say: open now or not, next opening, next maintenance, link state,
revocation feed age, fingerprint device state. The service's clock is placed inside or
outside its hours with `--fake-now`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardap.v1 import terminal_pb2
from cardap_sim.stack import Stack

from .conftest import cardapctl, client, wait_until
from .test_metrics_and_cli import scrape

JST = dt.timezone(dt.timedelta(hours=9))
OPEN_AT = "2026-11-24T10:00:00+09:00"  # a Tuesday, inside the hours
UPGRADE = ("2026-12-01T01:00:00+09:00", "2026-12-01T09:00:00+09:00")  # announced 17 Nov
LATER = ("2027-02-10T01:00:00+09:00", "2027-02-10T05:00:00+09:00")  # not announced yet
T = terminal_pb2
READ_APS = '[[read.aps]]\naid = "D392F00043010001"\ntype = "C"\norganisation = "org-a"\n\n'


@pytest.fixture
def sstack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "stack", loading=True, fake_now=OPEN_AT, extra_config=READ_APS,
              loading_config="schedule_interval_s = 1\n", loadsvc_args=(
                  "--maintenance", f"{UPGRADE[0]}/{UPGRADE[1]}/system upgrade",
                  "--maintenance", f"{LATER[0]}/{LATER[1]}/storage work"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def status(stack: Stack) -> T.GetStatusResponse:
    with client(stack, "kiosk") as kiosk:
        return kiosk.status()


def when(ts: object) -> dt.datetime:
    return ts.ToDatetime(dt.UTC).astimezone(JST)  # type: ignore[attr-defined]


def test_status_tells_open_closed_maintenance_and_the_rest(sstack: Stack) -> None:
    wait_until(lambda: status(sstack).loading_service.availability
               == T.SERVICE_AVAILABILITY_OPEN, 20, "the schedule")
    st = status(sstack)
    svc = st.loading_service
    assert svc.link == T.LOADING_LINK_UP
    assert when(svc.next_closing) == dt.datetime(2026, 11, 24, 22, tzinfo=JST)
    assert not svc.HasField("next_opening")
    m = svc.next_maintenance
    assert (when(m.start), when(m.end), m.description, when(m.announced_at)) == (
        dt.datetime(2026, 12, 1, 1, tzinfo=JST), dt.datetime(2026, 12, 1, 9, tzinfo=JST),
        "system upgrade", dt.datetime(2026, 11, 17, 0, tzinfo=JST))
    # the service's clock is the fake one: the measured offset says how far it is
    expected = dt.datetime.fromisoformat(OPEN_AT).timestamp() - time.time()
    assert abs(svc.clock_offset_s - expected) < 30
    wait_until(lambda: not status(sstack).revocation_feeds[0].stale, 30,
               "the revocation feed pulled at start")
    [feed] = status(sstack).revocation_feeds
    assert feed.organisation == "org-a"
    assert 0 <= feed.age_s < 60
    assert st.fingerprint_device in ("ok", "no_device", "unavailable", "unknown")
    metrics = scrape(sstack)
    offset = next(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("cardapd_loading_clock_offset_seconds "))
    assert abs(offset - expected) < 30
    assert "cardapd_loading_service_open 1.0" in metrics

    out = cardapctl(sstack.socket_dir, "--role", "kiosk", "status")
    assert out.returncode == 0, out.stderr
    assert "loading service: up (127.0.0.1:" in out.stdout
    assert "now: open until" in out.stdout
    for text in ("next maintenance: ", "system upgrade", "revocation feed org-a: ",
                 "fingerprint device: "):
        assert text in out.stdout, out.stdout

    with client(sstack, "gate") as gate:
        stream = gate.watch_status(timeout=60)
        first = next(stream)
        assert first.loading_service.availability == T.SERVICE_AVAILABILITY_OPEN
        # The service's clock moves inside the maintenance window: the stream says so.
        sstack.stop_loadsvc()
        sstack.start_loadsvc(fake_now="2026-12-01T02:00:00+09:00")
        changed = next(s for s in stream if s.loading_service.availability
                       == T.SERVICE_AVAILABILITY_MAINTENANCE)
        assert when(changed.loading_service.next_opening) == dt.datetime(
            2026, 12, 1, 9, tzinfo=JST)
        # ... then into the New Year closure: closed, opens on 4 January at 08:00.
        sstack.stop_loadsvc()
        sstack.start_loadsvc(fake_now="2026-12-30T10:00:00+09:00")
        closed = next(s for s in stream if s.loading_service.availability
                      == T.SERVICE_AVAILABILITY_CLOSED)
        assert when(closed.loading_service.next_opening) == dt.datetime(
            2027, 1, 4, 8, tzinfo=JST)
        # the upgrade is over; the February storage work is not announced until 27 January
        assert not closed.loading_service.HasField("next_maintenance")
        # the link goes down: the stream says that too, and the hours stay known
        sstack.stop_loadsvc()
        down = next(s for s in stream if s.loading_service.link == T.LOADING_LINK_DOWN)
        assert down.loading_service.availability == T.SERVICE_AVAILABILITY_CLOSED
        stream.close()
