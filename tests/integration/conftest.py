"""Fixtures that bring up the real stack: private pcscd + vpcd + virtual cards + cardapd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import cards_pb2
from cardap_sim.stack import Stack

pytestmark = pytest.mark.stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here drives the real stack."""
    for item in items:
        item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session", autouse=True)
def _needs_pcscd() -> None:
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        pytest.fail("pcscd is not installed: run `make setup` (apt-get install pcscd "
                    "vsmartcard-vpcd)")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A fresh stack with the daemon running; both slots empty."""
    s = Stack(tmp_path / "stack")
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for a module of tests that leave it as they found it."""
    s = Stack(tmp_path_factory.mktemp("shared") / "stack")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def client(stack: Stack, role: str = "gate", timeout: float = 10.0) -> CardapClient:
    """A client on `role`'s socket."""
    return CardapClient(stack.socket(role), timeout=timeout)


def wait_event(events: Iterator[cards_pb2.CardEvent], kind: int,
               timeout: float = 10.0) -> cards_pb2.CardEvent:
    """The next event of `kind` (others are skipped); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    for ev in events:
        if ev.kind == kind:
            return ev
        if time.monotonic() > deadline:
            break
    name = cards_pb2.CardEventKind.Name(kind)  # type: ignore[arg-type]
    raise AssertionError(f"no {name} event within {timeout}s")


def insert_and_wait(stack: Stack, slot: int, card: Path, timeout: float = 10.0, *,
                    contactless: bool = False) -> cards_pb2.Reader:
    """Insert `card` into `slot` (as a contactless reader presents it, if asked) and return
    the reader once the daemon identified it."""
    with client(stack) as gate:
        events = gate.watch(timeout=timeout + 5)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        stack.control.insert(slot, card, contactless=contactless)
        ev = wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_INSERTED, timeout)
        return ev.reader


def remove_and_wait(stack: Stack, slot: int, timeout: float = 10.0) -> None:
    """Remove the card in `slot` and wait for the daemon's CARD_REMOVED."""
    with client(stack) as gate:
        events = gate.watch(timeout=timeout + 5)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        stack.control.remove(slot)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_REMOVED, timeout)


def expect_error(fn: object, code: grpc.StatusCode, reason: str) -> CardapClientError:
    """Call `fn()` and check it fails with `code` and `reason`."""
    with pytest.raises(CardapClientError) as info:
        fn()  # type: ignore[operator]
    err = info.value
    assert (err.code, err.reason) == (code, reason), f"{err.code} {err.reason}: {err.message}"
    assert err.message, "every error carries a human message"
    return err


def reader_name(stack: Stack, slot: int) -> str:
    """The PC/SC name of a vpcd slot."""
    return f"Virtual PCD 00 {slot:02d}"


INPUT_ASSIST_AID = bytes.fromhex("D3921000310001010408")  # text input assist AP: never selected


def expected_card_id(stack: Stack, card: Path, source: str = "cert") -> str:
    """The id the daemon of `stack` gives the card in `card` (D50): its keyed hash, under
    the key in the daemon's state directory, of the certificate's issuer and serial
    (`source` "cert") or of the CPLC IC fabricator and serial ("cplc")."""
    from cardap_sim.vcard.card import VirtualCard
    from cardapd.config.secrets import read_secret_file
    from cardapd.myna.cardid import CardIdKey, issuer_and_serial
    key = CardIdKey(bytes.fromhex(read_secret_file(
        stack.dir / "state" / "card-id.key").decode()))
    state = VirtualCard.load(card).state
    if source == "cplc":
        return key.cplc_id(bytes.fromhex(state.cplc["ic_fabricator"]),
                           bytes.fromhex(state.cplc["ic_serial"]))
    assert state.auth_cert is not None
    datum = issuer_and_serial(state.auth_cert, whole=True)
    assert datum is not None
    return key.cert_id(datum)


LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def cardapctl(socket_dir: Path, *args: str, timeout: float = 30.0, lang: str = "C.UTF-8"
              ) -> subprocess.CompletedProcess[str]:
    """Run the installed `cardapctl` console script against `socket_dir`, in the locale
    `lang` (English unless a test asks, whatever the machine's own locale)."""
    exe = Path(sys.executable).parent / "cardapctl"
    env = {k: v for k, v in os.environ.items() if k not in LOCALE_VARIABLES}
    env.update(CARDAPD_SOCKET_DIR=str(socket_dir), LANG=lang)
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def metric(stack: Stack, name: str) -> float:
    """One unlabelled sample (`name value`) of the daemon's /metrics, as Prometheus reads it."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics",
                                  timeout=10).read().decode()
    (value,) = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


def daemon_alive(stack: Stack) -> bool:
    """Whether the daemon process of `stack` is still running."""
    return stack.daemon is not None and stack.daemon.poll() is None


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> None:
    """Poll `predicate` until truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def serving(stack: Stack) -> bool:
    """Whether the daemon answers GetStatus on the ops socket right now."""
    try:
        with CardapClient(stack.socket("ops"), timeout=2) as ops:
            ops.status()
    except CardapClientError:
        return False
    return True


def restart_daemon(stack: Stack, timeout: float = 20.0) -> None:
    """Start the daemon and wait until it answers.

    `Stack.start_daemon` waits for the socket files, which a SIGKILLed daemon leaves
    behind, so it can return before the new process listens.
    """
    stack.start_daemon()
    wait_until(lambda: serving(stack) or not daemon_alive(stack), timeout, "cardapd to serve")
    assert daemon_alive(stack), "cardapd exited at start"
