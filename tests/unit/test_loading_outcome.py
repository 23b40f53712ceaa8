"""SessionDone reasons → daemon errors → gRPC codes; operators; the [loading] config."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest

from cardap.v1 import loading_pb2
from cardapd.api.status import code_for
from cardapd.config import load_config
from cardapd.daemon import RosterSessions
from cardapd.domain import Right
from cardapd.errors import ConfigError, NotAuthorized, Unauthenticated
from cardapd.loading.outcome import error_for
from cardapd.operators.sessions import SessionManager, connection_scope
from cardapd.servicelink.convert import session_done
from cardapd_testing.sessions import TestOperatorSessions


@pytest.mark.parametrize(("reason", "code", "err_reason"), [
    ("CARD_FULL", grpc.StatusCode.RESOURCE_EXHAUSTED, "CARD_FULL"),
    ("ALREADY_EXISTS", grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    ("NOT_PERMITTED", grpc.StatusCode.PERMISSION_DENIED, "NOT_PERMITTED"),
    ("OUTSIDE_SERVICE_HOURS", grpc.StatusCode.UNAVAILABLE, "OUTSIDE_SERVICE_HOURS"),
    ("CARD_AUTH_FAILED", grpc.StatusCode.FAILED_PRECONDITION, "CARD_AUTH_FAILED"),
    ("CARD_MISMATCH", grpc.StatusCode.FAILED_PRECONDITION, "CARD_MISMATCH"),
    ("UNSUPPORTED_CARD", grpc.StatusCode.FAILED_PRECONDITION, "UNSUPPORTED_CARD"),
    ("CARD_REMOVED", grpc.StatusCode.ABORTED, "CARD_REMOVED"),
    ("UNKNOWN_AP", grpc.StatusCode.NOT_FOUND, "UNKNOWN_AP"),
    ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ("SOMETHING_NEW", grpc.StatusCode.UNAVAILABLE, "LOADING_SERVICE_ERROR"),
])
def test_reasons_map_to_codes(reason: str, code: grpc.StatusCode, err_reason: str) -> None:
    err = error_for(session_done(loading_pb2.SessionDone(ok=False, reason=reason,
                                                         message="why")))
    assert (code_for(err), err.reason) == (code, err_reason)
    assert err.message.endswith("why")
    assert err.metadata["service_reason"] == reason


def test_card_full_carries_the_space_and_hours_the_next_opening() -> None:
    full = error_for(session_done(loading_pb2.SessionDone(
        reason="CARD_FULL", free_bytes=100, needed_bytes=6144, aid="AA")))
    assert (full.metadata["free_bytes"], full.metadata["needed_bytes"]) == ("100", "6144")
    done = loading_pb2.SessionDone(reason="OUTSIDE_SERVICE_HOURS")
    done.next_opening.FromDatetime(dt.datetime(2026, 1, 4, 8, tzinfo=dt.UTC))
    assert error_for(session_done(done)).metadata["next_opening"] == "2026-01-04T08:00:00Z"


def test_production_refuses_test_tokens() -> None:
    """Without the test-only provider (cardapd_testing) a `test:` token is no session."""
    sessions = RosterSessions(SessionManager())
    for token in ("test:org-a:op", ""):
        with connection_scope("socket:kiosk"), pytest.raises(Unauthenticated) as info:
            sessions.validate(token)
        assert code_for(info.value) == grpc.StatusCode.UNAUTHENTICATED


def test_test_tokens() -> None:
    sessions = TestOperatorSessions()
    op = sessions.validate("test:org-a:op-1")
    assert (op.organisation, op.operator_id, op.actor) == ("org-a", "op-1", "org-a/op-1")
    op.require(Right.LOAD)
    only_delete = sessions.validate("test:org-a:op-2:delete")
    with pytest.raises(NotAuthorized):
        only_delete.require(Right.LOAD)
    for bad in ("", "test:", "org-a:op", "test:org-a:op:fly", "prod:org-a:op"):
        with pytest.raises(Unauthenticated):
            sessions.validate(bad)


def test_loading_config(tmp_path: Path) -> None:
    path = tmp_path / "cardapd.toml"
    path.write_text('[loading]\naddress = "127.0.0.1:7443"\nca = "/etc/cardapd/tls/ca.pem"\n'
                    'cert = "/etc/cardapd/tls/t.pem"\nkey = "/etc/cardapd/tls/t.key"\n'
                    'timeout_s = 5\n'
                    '[presets]\nready_event = true\n')
    cfg = load_config(path)
    assert cfg.loading.configured
    assert cfg.loading.timeout_s == 5.0
    assert cfg.loading.key == Path("/etc/cardapd/tls/t.key")
    assert cfg.presets.ready_event
    assert not load_config(None).loading.configured
    for text, expected in [
        ('[loading]\naddress = "127.0.0.1:7443"\n', "loading.ca: required"),
        ('[loading]\naddress = "nohost"\nca = "/etc/a"\ncert = "/etc/b"\nkey = "/etc/c"\n',
         "loading.address: expected host:port"),
        ('[presets]\nx = []\n', "presets.x: preset sets are kept on the roster"),
        ('[presets]\nready_event = 1\n', "presets.ready_event: expected true or false"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            load_config(path)
