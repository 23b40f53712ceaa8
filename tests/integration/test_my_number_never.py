"""The My Number is never selected, read, stored, logged or returned.

One representative session on one stack (APDU traffic logging on): two cards of both
vendor profiles, tap reads, cached and fresh reads, diagnoses, remove/reinsert, a garbage
fault, a forbidden AID, metrics, status, cardapctl. Then every place data can end up is
scanned for each card's fake My Number: logs, the audit database, /metrics and every API
answer collected along the way.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from cardap.client import CardapClient, CardapClientError
from cardap.v1 import cards_pb2
from cardap_sim.stack import Stack

from .conftest import (
    INPUT_ASSIST_AID,
    cardapctl,
    client,
    insert_and_wait,
    reader_name,
    remove_and_wait,
    wait_event,
)

DIGIT_RUN = re.compile(r"\d{12}")
# A SHA-256 in hex (an audit checkpoint's chain head) is 64 hex digits and often holds a
# 12-digit run by chance; it is a hash, not a number anyone typed. The exact My Numbers of
# the cards are searched for in every form above; the heuristic skips such hashes.
SHA256_HEX = re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{64}(?![0-9a-fA-F])")
# The AIDs of the card's built-in APs are public constants (the input assist AP's is
# D3921000310001010408, which the test asks for on purpose and the refusal names); they
# are 16-20 hex digits of which the digits run long. They are skipped like the hashes.
CARD_AID = re.compile(r"(?<![0-9A-Fa-f])D392[0-9A-F]{6,28}(?![0-9A-Fa-f])")


class Collected:
    """Everything the API handed out: serialized messages and error texts."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, item: Message | CardapClientError | str | bytes) -> None:
        if isinstance(item, Message):
            blob = item.SerializeToString() + str(item).encode()
        elif isinstance(item, CardapClientError):
            blob = f"{item} {item.message} {json.dumps(item.metadata)}".encode()
        elif isinstance(item, str):
            blob = item.encode()
        else:
            blob = item
        with self.lock:
            self.items.append(blob)

    def call(self, fn: object) -> object:
        try:
            result = fn()  # type: ignore[operator]
        except CardapClientError as err:
            self.add(err)
            return err
        if isinstance(result, Message):
            self.add(result)
        return result


@pytest.fixture
def traffic_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose daemon logs at the most verbose level (APDU traffic)."""
    s = Stack(tmp_path / "stack", log_level="traffic")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def watch_everything(stack: Stack, out: Collected, stop: threading.Event) -> threading.Thread:
    """A background client that records every card event until `stop`."""
    ready = threading.Event()

    def run() -> None:
        with CardapClient(stack.socket("ops")) as ops:
            events = ops.watch(timeout=120)
            for ev in events:
                out.add(ev)
                if ev.kind == cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END:
                    ready.set()
                if stop.is_set():
                    break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the watcher got no snapshot"
    return thread


def run_session(stack: Stack, out: Collected) -> dict[int, list[bytes]]:
    """The representative session; returns every SELECT each slot saw, per insertion."""
    selects: dict[int, list[bytes]] = {0: [], 1: []}
    r0, r1 = reader_name(stack, 0), reader_name(stack, 1)
    out.add(insert_and_wait(stack, 0, stack.demo_card("a")))
    out.add(insert_and_wait(stack, 1, stack.demo_card("b", profile="vendor-b")))
    with client(stack) as gate, client(stack, "kiosk") as kiosk, client(stack, "ops") as ops:
        for role in (gate, kiosk, ops):
            out.call(role.status)
            out.call(role.readers)
        for reader in (r0, r1):
            out.call(lambda r=reader: gate.read_user_id(r))
            out.call(lambda r=reader: gate.read_user_id(r, fresh=True))
            out.call(lambda r=reader: gate.read_user_id(r, "D392F00043010001", fresh=True))
            out.call(lambda r=reader: kiosk.read_user_id(r, "D392F00043010001", fresh=True))
            out.call(lambda r=reader: gate.read_user_id(r, "D392F000430100FF"))  # not on card
            out.call(lambda r=reader: gate.read_user_id(r, INPUT_ASSIST_AID.hex(), fresh=True))
        out.call(gate.read_user_id)  # ambiguous
        out.call(kiosk.diagnose)  # no operator session: refused
        out.call(ops.diagnose)
        out.call(lambda: ops.diagnose(r0))
        out.call(gate.diagnose)  # wrong role

        selects[0] += stack.control.selects(0)
        remove_and_wait(stack, 0)
        out.call(lambda: gate.read_user_id(r0))  # no card
        out.call(lambda: ops.diagnose(r0))
        out.add(insert_and_wait(stack, 0, stack.demo_card("a")))
        out.call(lambda: gate.read_user_id(r0, fresh=True))

        stack.control.fault(1, garbage=-1)
        out.call(lambda: gate.read_user_id(r1, fresh=True))
        out.call(lambda: ops.diagnose(r1))
        stack.control.fault(1, clear=True)
        out.call(lambda: gate.read_user_id(r1, fresh=True))
        for snap in ops.metrics(interval_s=1, timeout=10):
            out.add(snap)
            break
    for args in (["--json", "status"], ["--json", "readers"], ["diagnose"],
                 ["--json", "read-id", "--reader", r0, "--fresh"]):
        proc = cardapctl(stack.socket_dir, *args)
        out.add(proc.stdout + proc.stderr)
    selects[0] += stack.control.selects(0)
    selects[1] += stack.control.selects(1)
    return selects


def test_my_number_never_leaves_the_card(traffic_stack: Stack) -> None:
    stack = traffic_stack
    out = Collected()
    stop = threading.Event()
    watcher = watch_everything(stack, out, stop)
    selects = run_session(stack, out)

    # the session really happened
    assert any(s == bytes.fromhex("D392F00043010001") for s in selects[0])
    assert any(s == bytes.fromhex("D392F000260100000001") for s in selects[1])

    # 1. the text input assist AP was never selected, on either card
    for slot in (0, 1):
        assert INPUT_ASSIST_AID not in selects[slot], f"slot {slot} saw the input assist AID"
        assert not any(INPUT_ASSIST_AID.startswith(s) for s in selects[slot] if len(s) >= 5)

    # 2. the fake My Numbers of every card file
    numbers = []
    for card_file in sorted((stack.dir / "cards").glob("*.json")):
        number = json.loads(card_file.read_text())["my_number"]
        assert re.fullmatch(r"\d{12}", number)
        numbers.append(number)
    assert len(numbers) == 2

    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read()
    assert b"cardapd_operations_total" in metrics
    stop.set()
    with client(stack) as gate:  # one more event so the watcher sees `stop`
        events = gate.watch(timeout=10)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_SNAPSHOT_END)
        stack.control.remove(0)
        wait_event(events, cards_pb2.CARD_EVENT_KIND_CARD_REMOVED)
    watcher.join(10)

    state = stack.dir / "state"
    audit = b"".join(p.read_bytes() for p in sorted(state.glob("audit.db*")))
    assert audit, "no audit database"
    logs = stack.logs()
    assert {"cardapd.log", "sim.log", "pcscd.log"} <= set(logs)
    assert "cardapd.traffic" in logs["cardapd.log"], "APDU traffic was not logged"
    api = b"\n".join(out.items)
    assert len(out.items) > 40

    for number in numbers:
        forms = {number.encode(), number.encode().hex().encode(),
                 number.encode().hex().upper().encode()}
        for form in forms:
            for name, text in logs.items():
                assert form.decode() not in text, f"My Number in {name}"
            assert form not in audit, "My Number in the audit database"
            assert form not in metrics, "My Number in /metrics"
            assert form not in api, "My Number in an API answer"

    # 3. no log line at any level carries a 12-digit run (what a My Number looks like); an
    # APDU hex dump (TRAFFIC level) is checked on the bytes it shows, since hex of AIDs and
    # CPLC naturally has digit runs: no 12 ASCII digits may have crossed the wire
    dumps = 0
    for name, text in logs.items():
        for line in text.splitlines():
            payload = traffic_payload(line)
            if payload is not None:
                dumps += 1
                assert not re.search(rb"\d{12}", payload), f"{name}: {line}"
            else:
                scrubbed = CARD_AID.sub("<aid>", SHA256_HEX.sub("<sha256>", line))
                assert not DIGIT_RUN.search(scrubbed), f"{name}: {line}"
    assert dumps > 50, "the APDU traffic was not logged"


TRAFFIC_DUMP = re.compile(r"[<>] ([0-9A-F]{2}(?:[0-9A-F]{2}| )*)")


def traffic_payload(line: str) -> bytes | None:
    """The bytes of an APDU dump logged at TRAFFIC level, or None for any other line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("logger") != "cardapd.traffic":
        return None
    match = TRAFFIC_DUMP.fullmatch(str(record.get("message", "")))
    if match is None:
        return None
    return bytes.fromhex(match.group(1).replace(" ", ""))


def test_forbidden_aid_is_refused_before_any_apdu(stack: Stack) -> None:
    insert_and_wait(stack, 0, stack.demo_card())
    before = stack.control.status()["slots"][0]["apdu_count"]
    with client(stack) as gate:
        for aid in (INPUT_ASSIST_AID.hex(), INPUT_ASSIST_AID.hex()[:12],
                    INPUT_ASSIST_AID.hex() + "00"):
            with pytest.raises(CardapClientError) as info:
                gate.read_user_id(aid=aid, fresh=True)
            assert (info.value.code, info.value.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                            "AID_FORBIDDEN"), info.value
    assert stack.control.status()["slots"][0]["apdu_count"] == before
    assert INPUT_ASSIST_AID not in stack.control.selects(0)
