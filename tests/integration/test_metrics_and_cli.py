"""/metrics, WatchMetrics and the cardapctl command line against the real daemon."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cardap_sim.stack import Stack, demo_user_id

from .conftest import cardapctl, client, insert_and_wait, reader_name, wait_until

OPS_OK = ("cardapd_operations_total",
          (("operation", "read_user_id"), ("reason", ""), ("result", "ok")))


def scrape(stack: Stack, host: str = "127.0.0.1") -> str:
    url = f"http://{host}:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def empty_slots(stack: Stack) -> bool:
    for entry in stack.control.status()["slots"]:
        if entry["state"] != "empty":
            stack.control.remove(entry["slot"])
    with client(stack, "ops") as ops:
        return ops.status().cards == 0


@pytest.fixture
def st(shared_stack: Stack) -> Iterator[Stack]:
    yield shared_stack
    wait_until(lambda: empty_slots(shared_stack), 15, "both readers empty again")


# ---------------------------------------------------------------- metrics


def test_metrics_count_reads_and_match_watch_metrics(st: Stack) -> None:
    before = samples(scrape(st)).get(OPS_OK, 0.0)
    insert_and_wait(st, 0, st.demo_card("metrics"))
    n = 7
    with client(st) as gate:
        for i in range(n):
            gate.read_user_id(fresh=i % 2 == 1)
    http = samples(scrape(st))
    assert http[OPS_OK] == before + n
    assert http[("cardapd_readers", ())] == 2
    assert http[("cardapd_pcsc_up", ())] == 1
    assert http[("cardapd_cards_present", ())] == 1
    raw = scrape(st)
    assert 'cardapd_operations_total{operation="read_user_id"' in raw
    assert "cardapd_readers 2" in raw
    assert "cardapd_pcsc_up 1" in raw

    with client(st, "ops") as ops:
        snap = next(iter(ops.metrics(interval_s=1, timeout=10)))
        only_ops = next(iter(ops.metrics(interval_s=1, prefixes=["cardapd_operations"],
                                         timeout=10)))
    stream = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in snap.samples}
    assert stream[OPS_OK] == before + n
    assert stream[("cardapd_readers", ())] == 2
    assert only_ops.samples
    assert all(s.name.startswith("cardapd_operations") for s in only_ops.samples)


def test_watch_metrics_streams_snapshots(st: Stack) -> None:
    with client(st, "ops") as ops:
        stream = ops.metrics(interval_s=1, prefixes=["cardapd_readers"], timeout=10)
        first, second = next(stream), next(stream)
    assert second.time.ToDatetime() > first.time.ToDatetime()
    assert [s.name for s in first.samples] == ["cardapd_readers"]


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing address
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_metrics_listen_on_loopback_only(st: Stack) -> None:
    port = st.metrics_port
    assert st.daemon is not None
    listeners = []
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{st.daemon.pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                listeners.append((table, local.split(":")[0]))
    assert listeners == [("tcp", "0100007F")], listeners  # 127.0.0.1 only
    other = non_loopback_address()
    if other is not None:
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            scrape(st, other)


# ---------------------------------------------------------------- cardapctl


def test_cardapctl_status_json(st: Stack) -> None:
    proc = cardapctl(st.socket_dir, "--json", "status")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["version"]
    assert status["role"] == "ops"
    assert status["pcsc_available"] is True


def test_cardapctl_read_id(st: Stack) -> None:
    empty = cardapctl(st.socket_dir, "read-id")
    assert empty.returncode == 3, empty.stdout + empty.stderr
    assert "NO_CARD" in empty.stderr
    insert_and_wait(st, 1, st.demo_card("cli"))
    for extra in ((), ("--fresh",)):
        proc = cardapctl(st.socket_dir, "--json", "read-id", *extra)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["user_id"] == demo_user_id()
        assert out["reader"] == reader_name(st, 1)
        assert out["cached"] is (not extra)


def test_cardapctl_wrong_role_is_exit_4(st: Stack) -> None:
    proc = cardapctl(st.socket_dir, "--role", "gate", "--json", "diagnose")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    err = json.loads(proc.stderr)["error"]
    assert (err["code"], err["reason"]) == ("PERMISSION_DENIED", "WRONG_ROLE")


@pytest.mark.parametrize("args", [["status"], ["read-id"], ["diagnose"], ["watch", "--count", "1"],
                                  ["readers"], ["metrics"]])
def test_cardapctl_without_daemon_is_exit_5(tmp_path: Path, args: list[str]) -> None:
    proc = cardapctl(tmp_path, "--timeout", "3", *args)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "socket" in proc.stderr
    assert str(tmp_path) in proc.stderr


def test_cardapctl_watch_count(st: Stack) -> None:
    proc = cardapctl(st.socket_dir, "--json", "watch", "--count", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    events = [json.loads(line) for line in lines]
    assert [e["kind"] for e in events] == ["CARD_EVENT_KIND_SNAPSHOT"] * 2 + [
        "CARD_EVENT_KIND_SNAPSHOT_END"]
