"""Prometheus conventions and a real Prometheus server scraping the daemon."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from testenv import need

from cardap_sim.stack import Stack, free_port

from .conftest import client, insert_and_wait


def scrape(stack: Stack) -> bytes:
    """The daemon's /metrics body."""
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


def test_promtool_finds_nothing_to_report(shared_stack: Stack) -> None:
    insert_and_wait(shared_stack, 0, shared_stack.demo_card("prom"))
    with client(shared_stack) as gate:
        gate.read_user_id()
    body = scrape(shared_stack)
    result = subprocess.run([need("promtool"), "check", "metrics"], input=body, capture_output=True,
                            timeout=30, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), result
    shared_stack.control.remove(0)


@pytest.fixture
def prometheus(shared_stack: Stack, tmp_path: Path) -> Iterator[int]:
    """A Prometheus server on loopback scraping the daemon every second; yields its port."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: cardapd\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{shared_stack.metrics_port}']\n")
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(port: int, expr: str) -> list[dict[str, object]]:
    """An instant query against the Prometheus HTTP API."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_a_real_prometheus_scrapes_the_daemon(shared_stack: Stack, prometheus: int) -> None:
    with client(shared_stack, "ops") as ops:
        readers = ops.status().readers
    deadline = time.monotonic() + 40
    results: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            results = query(prometheus, 'cardapd_readers{job="cardapd"}')
        except OSError:
            results = []  # Prometheus still starting
        if results:
            break
        time.sleep(0.5)
    assert results, "Prometheus never scraped cardapd_readers"
    value = results[0]["value"]
    assert isinstance(value, list)
    assert float(value[1]) == readers == 2
    up = query(prometheus, 'up{job="cardapd"}')
    assert up
    assert float(up[0]["value"][1]) == 1.0  # type: ignore[index]
    # the state metrics: the chain verified at start, one fingerprint device state at a
    # time, no loading service configured (so its link is not counted as down)
    chain = query(prometheus, 'cardapd_audit_chain_verified{job="cardapd"} == 1 and '
                              'time() - cardapd_audit_chain_last_verified_timestamp_seconds'
                              ' < 600')
    assert chain, "the audit chain was not verified at start"
    states = query(prometheus, 'sum(cardapd_biometric_device_state{job="cardapd"})')
    assert float(states[0]["value"][1]) == 1.0  # type: ignore[index]
    link = query(prometheus, 'cardapd_loading_link_up{job="cardapd"} == 0 and on(job, '
                             'instance) cardapd_loading_configured == 0')
    assert link
