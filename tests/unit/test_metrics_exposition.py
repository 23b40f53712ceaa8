"""The exposition: the standard process metrics (also where /proc/stat is hidden, as under
the unit's ProcSubset=pid), no `_created` series, the version, and a page promtool's
`check metrics` finds nothing to criticise in."""

from __future__ import annotations

import os
import re
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from testenv import need

from cardapd.telemetry.metrics import BootTimeProcessCollector, Metrics

PROCESS = ("process_start_time_seconds", "process_resident_memory_bytes",
           "process_virtual_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
           "process_max_fds")


def start_time(text: str) -> float:
    m = re.search(r"(?m)^process_start_time_seconds (\S+)$", text)
    assert m, text
    return float(m.group(1))


def page(metrics: Metrics) -> str:
    metrics.operations.labels("read_user_id", "ok", "").inc()
    metrics.operation_seconds.labels("read_user_id").observe(0.01)
    metrics.apdu_seconds.observe(0.001)
    metrics.card_events.labels("inserted").inc()
    metrics.grpc_requests.labels("ReadUserID", "gate", "OK").inc()
    return generate_latest(metrics.registry).decode()


def test_process_metrics_and_no_created_series() -> None:
    text = page(Metrics())
    for name in PROCESS:
        assert re.search(rf"(?m)^{name} \S+$", text), name
    assert "python_info{" in text
    assert "_created" not in text
    assert f'cardapd_build_info{{version="{version("cardapd")}"}} 1.0' in text


def test_promtool_finds_nothing_to_criticise() -> None:
    result = subprocess.run([need("promtool"), "check", "metrics"], input=page(Metrics()),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_process_metrics_without_proc_stat(tmp_path: Path) -> None:
    """A proc like ProcSubset=pid's: only the process's own directory. The stock collector
    exports nothing there; ours takes the boot time from CLOCK_BOOTTIME."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / str(os.getpid())).symlink_to(f"/proc/{os.getpid()}")
    pid = lambda: os.getpid()  # noqa: E731
    stock, ours = CollectorRegistry(), CollectorRegistry()
    ProcessCollector(pid=pid, proc=str(proc), registry=stock)
    BootTimeProcessCollector(pid=pid, proc=str(proc), registry=ours)
    assert "process_" not in generate_latest(stock).decode()
    text = generate_latest(ours).decode()
    for name in PROCESS:
        assert re.search(rf"(?m)^{name} \S+$", text), name
    started = start_time(text)
    real = CollectorRegistry()
    ProcessCollector(registry=real)
    expected = start_time(generate_latest(real).decode())
    assert abs(started - expected) < 2.0  # /proc/stat's btime has whole seconds
    assert started <= time.time()
