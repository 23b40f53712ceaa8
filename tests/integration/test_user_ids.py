"""User IDs as the card holds them, through the real stack (issue 17 point 1, D49).

A Type C AP whose 13-byte user ID starts with 12 digits that pass the My Number check digit
is read at insertion, by ReadUserID, suspended with SetUserIDStatus and exported from the
audit log, never refused; free text holding a My Number is still refused; an
organisation's stricter format applies only when it opts in.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cardap.client import CardapClient
from cardap.v1 import cards_pb2, terminal_pb2
from cardap_sim.stack import DEMO_TYPE_C_AID, Stack
from cardap_sim.vcard.card import TypeCSpec
from cardap_sim.vcard.identity import fake_my_number
from cardapd.mynumber import looks_like_my_number

from .conftest import (
    cardapctl,
    client,
    expect_error,
    insert_and_wait,
    reader_name,
    wait_until,
)

AID = DEMO_TYPE_C_AID.hex().upper()
INFO = (b"\x00\x00\x00\x01", b"\x00\x00\x00\x02", b"\x00\x00\x00\x03")
ODD_ID = "ZZZZ0000ZZZZ0"  # the example: refused by the old invented check character
READ_APS = f'[[read.aps]]\naid = "{AID}"\ntype = "C"\norganisation = "org-a"\n\n'


@pytest.fixture
def ustack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose Type C AP is listed for org-a, so reads carry its revocation status."""
    s = Stack(tmp_path / "stack", extra_config=READ_APS)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def card_with(stack: Stack, name: str, user_id: str) -> Path:
    return stack.new_card(name, type_c=[TypeCSpec(DEMO_TYPE_C_AID, user_id, INFO)])


def set_status(ops: CardapClient, user_id: str, status: int, reason: str) -> None:
    ops._call(ops.stub.SetUserIDStatus, terminal_pb2.SetUserIDStatusRequest(
        organisation="org-a", aid=AID, user_id=user_id, status=status, reason=reason))


def reload(stack: Stack, extra_config: str) -> None:
    """Rewrite the configuration and SIGHUP the daemon; wait for its reload audit row."""
    stack.extra_config = extra_config
    stack.write_config()
    with client(stack, "ops") as ops:
        before = len(list(ops.export_audit(operations=["config_reload"])))
    assert stack.daemon is not None
    stack.daemon.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        with client(stack, "ops") as ops:
            return len(list(ops.export_audit(operations=["config_reload"]))) > before
    wait_until(reloaded, 20, "the configuration reload")


def test_my_number_shaped_user_id_through_read_audit_status_and_export(ustack: Stack) -> None:
    mn = fake_my_number()  # 12 digits with a valid My Number check digit
    user_id = mn + "X"
    assert looks_like_my_number(user_id), "the test needs an ID the guard would match"
    reader = insert_and_wait(ustack, 0, card_with(ustack, "mn-shaped", user_id))
    tap = reader.card.tap[0]
    assert (tap.user_id, tap.user_id_raw, tap.reason) == (user_id, user_id.encode(), "")

    with client(ustack) as gate, client(ustack, "ops") as ops:
        cached = gate.read_user_id(reader.name)
        fresh = gate.read_user_id(reader.name, fresh=True)
        for r in (cached, fresh):
            assert (r.user_id, r.user_id_raw) == (user_id, user_id.encode())
        assert (cached.cached, fresh.cached) == (True, False)
        assert fresh.status == cards_pb2.USER_ID_STATUS_UNKNOWN

        set_status(ops, user_id, cards_pb2.USER_ID_STATUS_SUSPENDED, "holder reported it lost")
        assert gate.read_user_id(reader.name).status == cards_pb2.USER_ID_STATUS_SUSPENDED

        # Free text is still guarded: refused before anything is stored.
        other = "ABCDEFGHIJKL1"
        err = expect_error(lambda: set_status(ops, other, cards_pb2.USER_ID_STATUS_SUSPENDED,
                                              f"My Number {fake_my_number()} on the form"),
                           grpc.StatusCode.INVALID_ARGUMENT, "MY_NUMBER_REFUSED")
        assert err.metadata["field"] == "reason"

        rows = list(ops.export_audit())
    ops_seen = [r.operation for r in rows]
    assert ops_seen.count("read_user_id") == 3
    assert "card_inserted" in ops_seen
    assert all(r.result == "ok" for r in rows if r.operation == "read_user_id")
    status_rows = [r for r in rows if r.operation == "set_user_id_status"]
    assert len(status_rows) == 1, "the refused call stored nothing"
    detail = json.loads(status_rows[0].detail_json)
    assert (detail["user_id"], detail["status"], status_rows[0].result) == (
        user_id, "suspended", "ok")
    assert other not in "".join(r.detail_json for r in rows)

    # The CLI's export carries it too (JSON Lines).

    out = cardapctl(ustack.socket_dir, "--role", "ops", "audit", "export", "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    assert user_id in out.stdout


def test_any_printable_id_and_the_organisation_format_opt_in(ustack: Stack) -> None:
    mn_id = fake_my_number() + "Q"
    r0 = insert_and_wait(ustack, 0, card_with(ustack, "odd", ODD_ID))
    r1 = insert_and_wait(ustack, 1, card_with(ustack, "mn", mn_id))
    assert r0.card.tap[0].user_id == ODD_ID
    assert r1.card.tap[0].user_id == mn_id
    with client(ustack) as gate:
        assert gate.read_user_id(reader_name(ustack, 0), fresh=True).user_id == ODD_ID

    # org-a opts in to a stricter format of its own: 4 letters, 8 digits... (ODD_ID fails)
    reload(ustack, READ_APS + '[user_id_formats]\norg-a = "^[0-9]{12}[A-Z]$"\n')
    with client(ustack) as gate:
        assert gate.read_user_id(reader_name(ustack, 1), fresh=True).user_id == mn_id
        err = expect_error(lambda: gate.read_user_id(reader_name(ustack, 0), fresh=True),
                           grpc.StatusCode.FAILED_PRECONDITION, "USER_ID_FORMAT")
        assert err.metadata["organisation"] == "org-a"
    with client(ustack, "ops") as ops:
        expect_error(lambda: set_status(ops, ODD_ID, cards_pb2.USER_ID_STATUS_SUSPENDED, "x"),
                     grpc.StatusCode.INVALID_ARGUMENT, "USER_ID_FORMAT")
        failed = [r for r in ops.export_audit(operations=["read_user_id"])
                  if r.result != "ok"]
    assert failed
    assert failed[-1].reason == "USER_ID_FORMAT"
