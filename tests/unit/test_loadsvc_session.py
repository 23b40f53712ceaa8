"""The card session engine: pure checks, then end to end against the in-process virtual card."""

from __future__ import annotations

import datetime as dt

import pytest

from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import ApType, Catalogue, Organisation, dev_catalogue, make_ap
from cardap_sim.loadsvc.hours import JST, FixedClock
from cardap_sim.loadsvc.issuer import Issuer
from cardap_sim.loadsvc.keystore import (
    DEV_MASTER_KEYS,
    ApSecrets,
    MasterKeyStore,
    dev_keystore,
)
from cardap_sim.loadsvc.relay import drive, run_batch
from cardap_sim.loadsvc.session import (
    Batch,
    BatchAnswer,
    CardSession,
    Done,
    Reason,
    ServiceCore,
    SessionRequest,
)
from cardap_sim.vcard import cardkeys
from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardap_sim.vcard.identity import validate_user_id
from cardlib.gp.commands import minimum_bytes
from cardlib.gp.keys import StaticKeys
from cardlib.gp.scp03 import FULL_SECURITY, SecurityLevel

OPEN = dt.datetime(2026, 11, 23, 10, tzinfo=JST)


def test_card_and_service_share_the_dev_master_keys() -> None:
    """The virtual card diversifies its SCP03 keys from the service's dev master keys."""
    assert cardkeys.DEV_MASTER_KEYS == DEV_MASTER_KEYS


def new_card(profile: str = "vendor-a") -> tuple[VirtualCard, InProcessConnection]:
    card = VirtualCard.create(profile=profile)
    return card, InProcessConnection(card)


def sized_catalogue(sizes: dict[str, int]) -> Catalogue:
    """One Type C AP per size (same for both vendors), all loadable by org-a."""
    aps = {f"c-{n}": make_ap(f"c-{n}", ApType.C, f"D392F00043A1{i:04X}",
                             f"D392F0004CA1{i:04X}", sizes={"vendor-a": n, "vendor-b": n},
                             info=(b"\x00\x00\x00\x01",) * 3)
           for i, n in enumerate(sizes.values())}
    return Catalogue(aps, {"org-a": Organisation("org-a", "A", frozenset(aps))})


@pytest.fixture
def core() -> ServiceCore:
    return ServiceCore(dev_catalogue(), dev_keystore(), Issuer(), Billing(), FixedClock(OPEN))


def load(core: ServiceCore, conn: InProcessConnection, ap_id: str, journal: str,
         **kw: str) -> tuple[Done, CardSession]:
    s = CardSession(core, SessionRequest("org-a", "load", ap_id=ap_id, journal_id=journal,
                                         **kw))
    return drive(s, conn.transmit), s


# --- pure: refused before touching the card ------------------------------------------------


def test_closed_gives_next_opening(core: ServiceCore) -> None:
    assert isinstance(core.clock, FixedClock)
    core.clock.set(dt.datetime(2026, 12, 30, 10, tzinfo=JST))
    done = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-staff-c",
                                            journal_id="j")).start()
    assert isinstance(done, Done)
    assert done.reason is Reason.OUTSIDE_SERVICE_HOURS
    assert done.next_opening == dt.datetime(2027, 1, 4, 8, tzinfo=JST)
    assert done.round_trips == 0


@pytest.mark.parametrize(("req", "reason"), [
    (SessionRequest("org-b", "load", ap_id="org-a-staff-c", journal_id="j"),
     Reason.NOT_PERMITTED),
    (SessionRequest("org-b", "delete", aid="D392F000430A0001"), Reason.NOT_PERMITTED),
    (SessionRequest("org-a", "load", ap_id="nope", journal_id="j"), Reason.UNKNOWN_AP),
    (SessionRequest("org-a", "format", ap_id="org-a-staff-c"), Reason.INVALID_ARGUMENT),
    (SessionRequest("org-a", "load", ap_id="org-a-staff-c"), Reason.INVALID_ARGUMENT),
    (SessionRequest("org-a", "load", ap_id="org-a-custom", journal_id="j"),
     Reason.INVALID_ARGUMENT),
    (SessionRequest("org-a", "load", ap_id="org-a-staff-c", journal_id="j",
                    custom_user_id="X" * 13), Reason.INVALID_ARGUMENT),
])
def test_refused_requests(core: ServiceCore, req: SessionRequest, reason: Reason) -> None:
    done = CardSession(core, req).start()
    assert isinstance(done, Done)
    assert done.reason is reason
    assert not done.ok


def test_first_batch_is_plain_probe(core: ServiceCore) -> None:
    s = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-staff-c",
                                         journal_id="j"))
    batch = s.start()
    assert isinstance(batch, Batch)
    assert batch.step == "probe"
    assert [a.command[:4].hex().upper() for a in batch.apdus] == [
        "00A4040C", "80CA9F7F", "80CA9F65", "80CAFF21", "80503000"[:4] + "0000"]


def test_terminal_that_lies_is_a_protocol_error(core: ServiceCore) -> None:
    s = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-staff-c",
                                         journal_id="j"))
    batch = s.start()
    assert isinstance(batch, Batch)
    # answers 6A82 to SELECT but carries on: not what a terminal may do
    done = s.answer(BatchAnswer(batch.batch_id, (b"\x6a\x82", b"\x90\x00"), True))
    assert isinstance(done, Done)
    assert done.reason is Reason.PROTOCOL_ERROR
    s2 = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-staff-c",
                                          journal_id="j"))
    b2 = s2.start()
    assert isinstance(b2, Batch)
    done = s2.answer(BatchAnswer(b2.batch_id, (), False, transport_error="CARD_REMOVED"))
    assert isinstance(done, Done)
    assert done.reason is Reason.CARD_REMOVED


# --- end to end against the virtual card ---------------------------------------------------


@pytest.mark.parametrize("profile", ["vendor-a", "vendor-b"])
@pytest.mark.parametrize("ap_id", ["org-a-staff-c", "org-a-cert-a", "org-a-records-d"])
def test_load_each_type(core: ServiceCore, profile: str, ap_id: str) -> None:
    card, conn = new_card(profile)
    done, _s = load(core, conn, ap_id, f"j-{profile}-{ap_id}", card_id=card.card_id)
    assert done.ok, done.message
    assert done.reason is Reason.LOADED
    assert validate_user_id(done.user_id)
    assert done.billed
    assert done.round_trips == 2
    assert done.free_bytes is not None
    aps = {a["aid"]: a for a in card.state.to_json()["aps"]}
    entry = aps[core.catalogue.aps[ap_id].instance_aid.hex().upper()]
    assert entry.get("user_id") == done.user_id


def test_load_custom(core: ServiceCore) -> None:
    _, conn = new_card()
    done, _ = load(core, conn, "org-a-custom", "j-custom", custom_user_id="EMP-000000042")
    assert done.ok, done.message
    assert done.user_id == "EMP-000000042"


@pytest.mark.parametrize(("profile", "size"), [("vendor-a", 2048), ("vendor-a", 8192),
                                               ("vendor-a", 32000), ("vendor-b", 2048),
                                               ("vendor-b", 8192), ("vendor-b", 24000)])
def test_round_trips_and_bytes_do_not_grow_with_size(profile: str, size: int) -> None:
    core = ServiceCore(sized_catalogue({"s": size}), dev_keystore(), Issuer(), Billing(),
                       FixedClock(OPEN))
    _, conn = new_card(profile)
    done, s = load(core, conn, f"c-{size}", f"j-{size}")
    assert done.ok, done.message
    assert done.round_trips <= 4
    minimum = minimum_bytes(s.stats.load_file_bytes, s.stats.max_command_data, core_level())
    assert s.stats.load_wire_bytes <= 1.05 * minimum
    print(f"{profile} size={size} trips={done.round_trips} loads={s.stats.load_commands} "
          f"block={s.stats.block_size} wire={s.stats.load_wire_bytes} min={minimum} "
          f"ratio={s.stats.load_wire_bytes / minimum:.4f} apdus={s.stats.apdus} "
          f"to_card={s.stats.bytes_to_card}")


def core_level() -> SecurityLevel:
    """The security level the service uses for content management."""
    return FULL_SECURITY


def test_card_full_on_vendor_b_before_writing() -> None:
    core = ServiceCore(sized_catalogue({"s": 32000}), dev_keystore(), Issuer(), Billing(),
                       FixedClock(OPEN))
    _card, conn = new_card("vendor-b")
    done, _ = load(core, conn, "c-32000", "j-full")
    assert done.reason is Reason.CARD_FULL
    assert not done.ok
    assert not done.billed
    assert done.free_bytes == 24576
    assert done.needed_bytes == 32000
    assert done.round_trips == 1
    assert core.billing.count("org-a", 2026) == 0


def test_already_exists_then_idempotent_retry(core: ServiceCore) -> None:
    _card, conn = new_card()
    first, _ = load(core, conn, "org-a-staff-c", "j1")
    retry, _ = load(core, conn, "org-a-staff-c", "j1")
    assert retry.ok
    assert retry.user_id == first.user_id
    assert not retry.billed
    other, _ = load(core, conn, "org-a-staff-c", "j2")
    assert other.reason is Reason.ALREADY_EXISTS
    assert not other.ok
    assert other.round_trips == 2
    assert core.billing.count("org-a", 2026) == 1


def test_delete_then_absent(core: ServiceCore) -> None:
    _card, conn = new_card()
    loaded, _ = load(core, conn, "org-a-cert-a", "j1")
    d = drive(CardSession(core, SessionRequest("org-a", "delete", ap_id="org-a-cert-a")),
              conn.transmit)
    assert d.ok
    assert d.reason is Reason.DELETED
    assert d.round_trips == 2
    assert d.free_bytes is not None
    assert loaded.free_bytes is not None
    assert d.free_bytes > loaded.free_bytes
    again = drive(CardSession(core, SessionRequest("org-a", "delete",
                                                   aid="D392F000410A0002")), conn.transmit)
    assert again.ok
    assert again.reason is Reason.ALREADY_ABSENT


def test_wrong_master_keys_is_card_auth_failed(core: ServiceCore) -> None:
    _, conn = new_card()
    other = StaticKeys(bytes(16), bytes(16), bytes(16), 0x30)
    bad = ServiceCore(core.catalogue, MasterKeyStore({0x30: other}), Issuer(), Billing(),
                      FixedClock(OPEN))
    done, _ = load(bad, conn, "org-a-staff-c", "j1")
    assert done.reason is Reason.CARD_AUTH_FAILED
    assert done.round_trips == 1


@pytest.mark.parametrize("profile", ["vendor-a", "vendor-b"])
def test_card_without_cplc_is_identified_by_its_kdd(core: ServiceCore, profile: str) -> None:
    # Presented contactless, the card gives no CPLC: the service takes the card's identity
    # and vendor from INITIALIZE UPDATE, so the same card keeps one id on either interface;
    # the terminal's card id is its own opaque name, recorded, never compared.
    card, conn = new_card(profile)
    card.present(contactless=True)
    done, _ = load(core, conn, "org-a-staff-c", "j1", card_id="cert-00112233445566778899")
    assert done.ok, done.message
    assert (done.card_id, done.profile) == (card.card_id, profile)


def _tear_after(conn: InProcessConnection, n: int):  # type: ignore[no-untyped-def]
    """A transmit that answers the first `n` APDUs, then raises like a removed card."""
    from cardapd.errors import CardRemoved
    count = 0

    def tx(apdu: bytes) -> bytes:
        nonlocal count
        count += 1
        if count > n:
            raise CardRemoved("torn")
        return conn.transmit(apdu)
    return tx


def test_torn_load_is_reconciled_then_loads(core: ServiceCore) -> None:
    card, conn = new_card()
    # probe (5) + EXT AUTH + 2 GET STATUS + INSTALL + 3 LOAD blocks, then the card goes
    s = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-staff-c",
                                         journal_id="j1"))
    torn = drive(s, _tear_after(conn, 12))
    assert torn.reason is Reason.CARD_REMOVED
    assert not torn.billed
    lfs = card.state.to_json().get("load_files", [])
    assert any(not lf["complete"] for lf in lfs)
    rec = drive(CardSession(core, SessionRequest("org-a", "reconcile", ap_id="org-a-staff-c",
                                                 journal_id="j1")), conn.transmit)
    assert rec.ok
    assert rec.reason is Reason.RECONCILED
    assert rec.round_trips == 3
    assert not card.state.to_json().get("load_files")
    ok, _ = load(core, conn, "org-a-staff-c", "j1")
    assert ok.ok
    assert ok.billed


def test_torn_load_retried_directly_deletes_stale_copy(core: ServiceCore) -> None:
    _card, conn = new_card()
    s = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-cert-a",
                                         journal_id="j1"))
    drive(s, _tear_after(conn, 20))
    done, _s2 = load(core, conn, "org-a-cert-a", "j1")
    assert done.ok, done.message
    assert done.reason is Reason.LOADED
    assert done.round_trips == 4


def test_reconcile_after_lost_done_bills_once(core: ServiceCore) -> None:
    _card, conn = new_card()
    s = CardSession(core, SessionRequest("org-a", "load", ap_id="org-a-staff-c",
                                         journal_id="j1"))
    step = s.start()
    # run everything on the card but never tell the service the result of the last batch
    while isinstance(step, Batch) and step.step != "load":
        step = s.answer(run_batch(conn.transmit, step))
    assert isinstance(step, Batch)
    run_batch(conn.transmit, step)
    assert core.billing.count("org-a", 2026) == 0
    rec = drive(CardSession(core, SessionRequest("org-a", "reconcile", ap_id="org-a-staff-c",
                                                 journal_id="j1")), conn.transmit)
    assert rec.ok
    assert rec.reason is Reason.RECONCILED
    assert rec.billed
    assert validate_user_id(rec.user_id)
    assert core.billing.count("org-a", 2026) == 1


def test_no_secret_or_store_data_in_logs(core: ServiceCore,
                                         caplog: pytest.LogCaptureFixture) -> None:
    import logging
    caplog.set_level(logging.DEBUG)
    secret = ApSecrets(bytes.fromhex("7E1F" * 8), "Zq7#Pw2!x")
    core = ServiceCore(core.catalogue, MasterKeyStore(
        {0x30: DEV_MASTER_KEYS}, ap_secrets={"org-a/org-a-records-d": secret}),
        Issuer(), Billing(), FixedClock(OPEN))
    _, conn = new_card()
    done, _ = load(core, conn, "org-a-records-d", "j1")
    assert done.ok
    secrets = core.keys.ap_secrets("org-a/org-a-records-d")
    # The service's (and the daemon library's) own records: the simulator's debug log of
    # the card side is not the service's, and its random ciphertext may contain any hex.
    ours = [r for r in caplog.records if not r.name.startswith("cardap_sim.vcard")]
    text = " ".join(r.getMessage() + repr(r.__dict__) for r in ours)
    assert secrets.access_key.hex() not in text.lower()
    assert secrets.pin not in text
    assert DEV_MASTER_KEYS.enc.hex() not in text.lower()
    assert "80E2" not in text.upper()


# --- the contract with the daemon's readers -------------------------------------------------


@pytest.mark.parametrize(("ap_id", "session_cls"), [
    ("org-a-cert-a", "TypeASession"), ("org-a-records-d", "TypeDSession")])
def test_loaded_type_a_and_d_read_back_with_the_daemons_sessions(
        core: ServiceCore, ap_id: str, session_cls: str) -> None:
    """What the service personalises is what the daemon's strict Type A/D readers accept."""
    from cardapd.myna import typea, typed
    from cardapd.myna.pin_guard import PinGuard
    from cardlib.protocol import ApduProtocol

    _, conn = new_card()
    done, _ = load(core, conn, ap_id, "j-read")
    assert done.ok, done
    entry = core.catalogue.aps[ap_id]
    secrets = core.keys.ap_secrets(entry.access_key_ref)
    cls = typea.TypeASession if session_cls == "TypeASession" else typed.TypeDSession
    record = cls(ApduProtocol(conn)).read(entry.instance_aid, secrets.access_key,
                                          secrets.pin.encode(), PinGuard(1))
    assert record.user_id == done.user_id
    assert record.info1.rstrip(b"\x00") == entry.info[0]
