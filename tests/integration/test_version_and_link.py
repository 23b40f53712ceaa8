"""One version everywhere (the distribution's metadata, from the git tag): `cardapd
--version`, `cardapctl --version`, GetStatus, `cardapd_build_info` and the user agent the
loading service sees. A daemon whose loading link cannot be set up (its TLS files are
missing) starts all the same, serves reads, and shows the link down in GetStatus and the
metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc
import pytest

from cardap.v1 import loading_pb2, loading_pb2_grpc, terminal_pb2
from cardap_sim.loadsvc.devca import write_bundle
from cardap_sim.stack import Stack, demo_user_id
from cardapd import __version__
from cardapd.config import LoadingConfig
from cardapd.servicelink.client import LoadingClient

from .conftest import client, insert_and_wait

VENV_BIN = Path(sys.executable).parent


def test_the_commands_print_the_distributions_version() -> None:
    """Run from / so that no build's egg-info in the checkout stands in for the installed
    distribution's metadata."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60,
                              cwd="/").stdout
    expected = out(sys.executable, "-c", "import importlib.metadata as m, cardap, cardapd; "
                   "assert cardapd.__version__ == cardap.__version__; "
                   "print(m.version('cardapd'))").strip()
    assert expected
    for command in ("cardapd", "cardapctl"):
        assert out(str(VENV_BIN / command), "--version") == f"{command} {expected}\n"


def test_status_and_build_info_carry_the_version(shared_stack: Stack) -> None:
    assert __version__ == version("cardapd")
    with client(shared_stack, "ops") as ops:
        assert ops.status().version == version("cardapd")
    url = f"http://127.0.0.1:{shared_stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert f'cardapd_build_info{{version="{version("cardapd")}"}} 1.0' in text


class Recorder(loading_pb2_grpc.LoadingServiceServicer):
    """A loading service that only remembers who called."""

    def __init__(self) -> None:
        self.user_agents: list[str] = []

    async def GetCatalogue(self, request: loading_pb2.GetCatalogueRequest,
                           context: Any) -> loading_pb2.GetCatalogueResponse:
        self.user_agents += [v for k, v in context.invocation_metadata() if k == "user-agent"]
        return loading_pb2.GetCatalogueResponse(organisation="org-a")


async def test_the_loading_service_sees_the_version_in_the_user_agent(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    write_bundle(certs, [("kiosk-01", "org-a")])
    server = grpc.aio.server()
    recorder = Recorder()
    loading_pb2_grpc.add_LoadingServiceServicer_to_server(recorder, server)
    creds = grpc.ssl_server_credentials(
        [((certs / "service.key").read_bytes(), (certs / "service.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    link = LoadingClient(LoadingConfig(address=f"127.0.0.1:{port}",  # type: ignore[arg-type]
                                       ca=certs / "ca.pem", cert=certs / "kiosk-01.pem",
                                       key=certs / "kiosk-01.key"))
    try:
        await link.catalogue("org-a")
    finally:
        await link.close()
        await server.stop(None)
    (agent,) = recorder.user_agents
    assert agent.startswith(f"cardapd/{version('cardapd')} grpc-python"), agent


@pytest.fixture
def kiosk_without_tls_files(tmp_path: Path) -> Iterator[Stack]:
    """A kiosk configured for a loading service whose TLS files do not exist."""
    missing = tmp_path / "tls"
    stack = Stack(tmp_path / "stack", extra_config=(
        f'[loading]\naddress = "loading.example.jp:7443"\nca = "{missing}/ca.pem"\n'
        f'cert = "{missing}/terminal.pem"\nkey = "{missing}/terminal.key"\n'))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def test_a_daemon_whose_loading_link_cannot_be_set_up_serves_reads(
        kiosk_without_tls_files: Stack) -> None:
    stack = kiosk_without_tls_files
    insert_and_wait(stack, 0, stack.demo_card())
    with client(stack, "gate") as gate:
        assert gate.read_user_id().user_id == demo_user_id()
    with client(stack, "ops") as ops:
        link = ops.status().loading_link
    assert link.state == terminal_pb2.LOADING_LINK_DOWN
    assert link.last_error == "tls_files"
    assert link.address == "loading.example.jp:7443"
    assert not link.HasField("last_success_at")
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert "cardapd_loading_configured 1.0" in text
    assert "cardapd_loading_link_up 0.0" in text
    # counted once at start, and again by each retry (link check, schedule fetch)
    errors = re.search(r'(?m)^cardapd_loading_link_errors_total\{reason="tls_files"\} (\S+)$',
                       text)
    assert errors, text
    assert float(errors.group(1)) >= 1
    log = stack.logs()["cardapd.log"]
    assert "the loading link cannot be set up: loading.ca: " in log
    assert "terminal.key: missing" in log


def test_a_gate_has_no_loading_link(shared_stack: Stack) -> None:
    with client(shared_stack, "ops") as ops:
        link = ops.status().loading_link
    assert link.state == terminal_pb2.LOADING_LINK_NOT_CONFIGURED
    assert link.address == ""
