"""The HTTP endpoint: /healthz answers health (200, or 503 with the reasons), /metrics the
metrics, any other path 404 (real daemon, real pcscd killed and restarted)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from cardap_sim.stack import Stack

from .conftest import wait_until


def get(stack: Stack, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET of `path` on the endpoint."""
    url = f"http://127.0.0.1:{stack.metrics_port}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_healthz_metrics_and_404(stack: Stack, tmp_path: Path) -> None:
    first = get(stack, "healthz")  # the sockets answer a moment before "ready"
    assert first[0] == 200 or first[2] == "STARTING: cardapd is starting\n", first
    wait_until(lambda: get(stack, "healthz")[0] == 200, 15, "/healthz to say 200")
    assert get(stack, "healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    status, ctype, body = get(stack, "metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert "cardapd_pcsc_up 1.0" in body
    for other in ("", "metric", "healthz/x", "favicon.ico"):
        status, _, body = get(stack, other)
        assert status == 404, other
        assert "/metrics" in body
        assert "cardapd_" not in body

    stack.kill_pcscd()
    wait_until(lambda: get(stack, "healthz")[0] == 503, 15, "/healthz to say 503")
    status, _, body = get(stack, "healthz")
    assert body.startswith("PCSC_UNAVAILABLE: pcscd is not reachable"), body
    assert get(stack, "metrics")[0] == 200  # the numbers still come while unhealthy

    stack.start_pcscd()
    wait_until(lambda: get(stack, "healthz")[0] == 200, 20, "/healthz to be 200 again")
