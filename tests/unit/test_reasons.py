"""The reason registry (cardap.reasons) is the daemon's truth and the docs' source: every
entry well formed, its gRPC code the one the daemon sends, asserted by some test, the
README's table generated from it, the protos' comments agreeing with it, and the
LocalizedMessage the daemon adds built from it."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

import cardapd
import cardlib.errors as card
from cardap import exitcodes, reasons
from cardap.i18n import tr
from cardapd import errors as e
from cardapd.api.status import code_for, to_status

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
UPPER = re.compile(r"^[A-Z][A-Z0-9_]+$")

NOT_YET_ASSERTED = frozenset({
    # Registered reasons no test names yet. The list only shrinks: a test fails when one
    # here has gained a test. Why each is still here:
    # fprintd ends an enrolment so only on a sensor with on-chip storage; libfprint's
    # virtual_image sensor turns every injected device error into enroll-unknown-error.
    "ENROLL_FAILED", "FINGER_ALREADY_ENROLLED", "BIOMETRIC_STORAGE_FULL",
    # Dead: the reasons of base classes (cardapd.errors CardError, PinError,
    # ServiceUnavailable; cardlib CardLibError) that no raise sends, each naming its own;
    # to leave the code path and the registry (SERVICE_UNAVAILABLE is in v1.0.0's table).
    "CARD_ERROR", "PIN_ERROR", "SERVICE_UNAVAILABLE",
})


def test_every_entry_is_well_formed() -> None:
    codes = [r.code for r in reasons.REASONS]
    assert len(codes) == len(set(codes)), "a reason registered twice"
    names = {x.name for x in exitcodes.EXITS}
    for r in reasons.REASONS:
        assert UPPER.match(r.code), r.code
        assert r.exit in names, r
        assert all(c in grpc.StatusCode.__members__ for c in r.grpc), r
        assert r.grpc or r.source == "audit", f"{r.code}: which gRPC code?"
        assert r.meaning.endswith("."), r.code
        assert r.next_step.endswith("."), r.code
        for text in (r.meaning, r.next_step):
            unknown = set(reasons.PLACEHOLDER.findall(text)) - set(r.metadata)
            assert not unknown, f"{r.code}: {unknown} is not one of its metadata keys"


def _daemon_error_classes() -> dict[str, type[e.CardapError]]:
    for mod in pkgutil.walk_packages(cardapd.__path__, "cardapd."):
        if not mod.name.startswith(("cardapd.main", "cardapd.bootstrap_admin")):
            importlib.import_module(mod.name)
    found: dict[str, type[e.CardapError]] = {}
    todo: list[type[e.CardapError]] = [e.CardapError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def test_the_registry_says_the_grpc_code_the_daemon_sends() -> None:
    """Each reason's class (its own, or the class a raise site names with `reason=`) maps
    to one of the codes the registry gives it."""
    from test_cli_contract import DAEMON
    classes = _daemon_error_classes()
    sent: dict[str, set[str]] = {}
    for cls in classes.values():
        sent.setdefault(cls.reason, set()).add(code_for(cls.__new__(cls)).name)
    call = re.compile(r"\b([A-Z]\w+)\((?:[^()]|\([^()]*\))*?reason=\"([A-Z_]+)\"", re.S)
    for path in DAEMON.rglob("*.py"):
        for name, reason in call.findall(path.read_text()):
            if name in classes:
                sent.setdefault(reason, set()).add(code_for(classes[name].__new__(
                    classes[name])).name)
    for lib in (card.SecureChannelError, card.CardAuthenticationError,
                card.ResponseIntegrityError, card.CardProtocolError):
        made = e.from_card(lib("x"))
        sent.setdefault(made.reason, set()).add(code_for(made).name)
    wrong = {r: codes for r, codes in sent.items()
             if r in reasons.BY_CODE and reasons.BY_CODE[r].source == "daemon"
             and not codes <= set(reasons.BY_CODE[r].grpc)}
    assert not wrong, f"the daemon sends these with codes the registry does not say: {wrong}"
    assert sent["READER_AMBIGUOUS"] == {"FAILED_PRECONDITION"}
    assert sent["UNKNOWN_AP"] == {"NOT_FOUND"}


def test_every_registered_reason_is_asserted_by_a_test() -> None:
    mine = {Path(__file__).name, "test_cli_contract.py"}
    text = "\n".join(p.read_text() for p in TESTS.rglob("*.py") if p.name not in mine)
    untested = {r.code for r in reasons.REASONS if not re.search(rf"\b{r.code}\b", text)}
    new = untested - NOT_YET_ASSERTED
    assert not new, f"no test names these reasons: {new}"
    gained = NOT_YET_ASSERTED - untested
    assert not gained, f"these have a test now: take them off NOT_YET_ASSERTED: {gained}"


def test_readme_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reasons.with_table(readme) == readme, "run make docs"
    section = readme.split(reasons.BEGIN)[1].split(reasons.END)[0]
    for r in reasons.REASONS:
        assert f"| `{r.code}` |" in section


PAIR = re.compile(r"\b(" + "|".join(grpc.StatusCode.__members__) + r")\b[ (]*(?:reason )?"
                  r"`?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b")


def test_proto_comments_agree_with_the_registry() -> None:
    """Where a proto comment names a gRPC code with a reason, the registry agrees; every
    reason a comment names with a code is registered."""
    seen = []
    for proto in (ROOT / "proto").rglob("*.proto"):
        comments = " ".join(line.split("//", 1)[1] for line in proto.read_text().splitlines()
                            if "//" in line)
        for code, reason in PAIR.findall(comments):
            if reason in grpc.StatusCode.__members__:
                continue
            seen.append(reason)
            assert reason in reasons.BY_CODE, f"{proto.name}: {reason} is not registered"
            assert code in reasons.BY_CODE[reason].grpc, \
                f"{proto.name} says {code} {reason}; the registry says " \
                f"{reasons.BY_CODE[reason].grpc}"
    assert {"READER_AMBIGUOUS", "SESSION_IN_USE", "WRONG_ROLE"} <= set(seen)


def _details(status: grpc.Status) -> tuple[error_details_pb2.ErrorInfo,
                                           error_details_pb2.LocalizedMessage | None]:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    rich = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    if len(rich.details) < 2:
        return info, None
    text = error_details_pb2.LocalizedMessage()
    assert rich.details[1].Unpack(text)
    return info, text


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_status_carries_a_localized_message_filled_from_metadata(lang: str) -> None:
    err = e.InvalidPinError("wrong PIN (user authentication), 2 tries left", 2)
    status = to_status(err, "rid-1", lang)
    assert status.details == "wrong PIN (user authentication), 2 tries left"  # English
    info, text = _details(status)
    assert info.reason == "PIN_WRONG"
    assert info.metadata["tries_left"] == "2"
    assert text is not None
    assert text.locale == lang
    entry = reasons.BY_CODE["PIN_WRONG"]
    assert text.message.startswith(tr(lang, entry.meaning, tries_left="2"))
    assert tr(lang, entry.next_step) in text.message
    assert "2" in text.message
    assert "{" not in text.message
    if lang == "ja":
        assert "暗証番号" in text.message


def test_an_unregistered_reason_gets_no_localized_message() -> None:
    _, text = _details(to_status(e.CardapError("x", reason="SOMETHING_NEWER"), "", "ja"))
    assert text is None
    assert reasons.localized("SOMETHING_NEWER", "ja", {}) == ""
