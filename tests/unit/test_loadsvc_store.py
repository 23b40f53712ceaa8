"""User ID issuer, billing counts, catalogue permissions and the key store."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

import pytest

from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import (
    ApType,
    CatalogueError,
    catalogue_from_dict,
    dev_catalogue,
    load_catalogue,
)
from cardap_sim.loadsvc.hours import JST
from cardap_sim.loadsvc.issuer import Issuer, JournalConflict, UserIdTaken, random_user_id
from cardap_sim.loadsvc.keystore import (
    DEV_MASTER_KEYS,
    FileKeyStore,
    KeyFileError,
    dev_keystore,
    write_dev_key_file,
)
from cardap_sim.vcard.identity import validate_user_id
from cardlib.gp.keys import KeyStore, kcv

# --- issuer ----------------------------------------------------------------------------


def test_user_ids_are_valid_and_unique(tmp_path: Path) -> None:
    iss = Issuer(tmp_path / "ids.sqlite3")
    ids = {iss.issue(organisation="org-a", ap_id="ap", card_id=f"4790-{i:08X}",
                     journal_id=f"j{i}").user_id for i in range(300)}
    assert len(ids) == 300
    assert all(validate_user_id(u) for u in ids)
    assert all("I" not in u and "O" not in u for u in ids)
    assert iss.count("org-a", "ap") == 300


def test_same_journal_same_user_id_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "ids.sqlite3"
    iss = Issuer(path)
    a = iss.issue(organisation="org-a", ap_id="ap", card_id="4790-1", journal_id="j1")
    iss.close()
    b = Issuer(path).issue(organisation="org-a", ap_id="ap", card_id="4790-1", journal_id="j1")
    assert a.new
    assert not b.new
    assert a.user_id == b.user_id


def test_journal_reuse_for_another_card_is_refused() -> None:
    iss = Issuer()
    iss.issue(organisation="org-a", ap_id="ap", card_id="4790-1", journal_id="j1")
    with pytest.raises(JournalConflict):
        iss.issue(organisation="org-a", ap_id="ap", card_id="4790-2", journal_id="j1")
    # other organisations have their own journal namespace
    iss.issue(organisation="org-b", ap_id="ap", card_id="4790-2", journal_id="j1")


def test_collisions_are_retried_and_custom_ids_unique() -> None:
    seq = iter(["0000000000011", "0000000000011", "000000000002Q"])
    iss = Issuer(generate=lambda: next(seq))
    assert iss.issue(organisation="o", ap_id="ap", card_id="c1", journal_id="j1").user_id \
        == "0000000000011"
    assert iss.issue(organisation="o", ap_id="ap", card_id="c2", journal_id="j2").user_id \
        == "000000000002Q"
    iss.issue(organisation="o", ap_id="x", card_id="c3", journal_id="j3",
              custom_user_id="EMP-000000001")
    with pytest.raises(UserIdTaken):
        iss.issue(organisation="o", ap_id="x", card_id="c4", journal_id="j4",
                  custom_user_id="EMP-000000001")
    with pytest.raises(ValueError, match="13 printable"):
        iss.issue(organisation="o", ap_id="x", card_id="c5", journal_id="j5",
                  custom_user_id="short")


def test_random_user_id_check_char() -> None:
    assert all(validate_user_id(random_user_id()) for _ in range(100))


# --- billing ---------------------------------------------------------------------------


def test_billing_counts_per_year_and_is_idempotent(tmp_path: Path) -> None:
    b = Billing(tmp_path / "loads.sqlite3")
    at = dt.datetime(2026, 11, 23, 10, tzinfo=JST)
    for i in range(3):
        assert b.record(organisation="org-a", journal_id=f"j{i}", ap_id="c", card_id="x",
                        operator_id="op", at=at)
    assert not b.record(organisation="org-a", journal_id="j0", ap_id="c", card_id="x",
                        operator_id="op", at=at)
    # 31 Dec 23:30 UTC is 1 Jan JST: counted in the JST year
    b.record(organisation="org-a", journal_id="j9", ap_id="d", card_id="x", operator_id="op",
             at=dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.UTC))
    b.record(organisation="org-b", journal_id="j0", ap_id="c", card_id="x", operator_id="op",
             at=at)
    rep = b.report("org-a", 2026)
    assert rep.loads == 3
    assert rep.yen == 30
    assert rep.per_ap == {"c": 3}
    assert b.count("org-a", 2027) == 1
    assert b.count("org-b", 2026) == 1
    assert b.is_billed("org-a", "j1")
    assert not b.is_billed("org-a", "jX")


# --- catalogue -------------------------------------------------------------------------


def test_dev_catalogue_permissions() -> None:
    cat = dev_catalogue()
    assert cat.permitted("org-a", "org-a-staff-c")
    assert not cat.permitted("org-b", "org-a-staff-c")
    assert not cat.permitted("nobody", "org-a-staff-c")
    assert not cat.permitted("org-a", "no-such-ap")
    assert [ap.ap_id for ap in cat.for_organisation("org-b")] == ["org-b-door-c"]
    assert cat.for_organisation("nobody") == []


def test_images_are_deterministic_sized_and_per_vendor() -> None:
    ap = dev_catalogue().aps["org-a-cert-a"]
    a, b = ap.image("vendor-a"), ap.image("vendor-b")
    assert len(a) == 8192
    assert len(b) == 8704
    assert a != b[:8192]
    assert a == dev_catalogue().aps["org-a-cert-a"].image("vendor-a")
    assert ap.module_aid == bytes.fromhex("D392F0004F41")
    assert ap.type is ApType.A


def test_catalogue_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cat.toml"
    path.write_text('''
[[ap]]
id = "x-door"
type = "C"
instance_aid = "D392F00043990001"
load_file_aid = "D392F0004C990001"
info = ["00000001", "00000002", "00000003"]
image_bytes = { vendor-a = 1000, vendor-b = 1100 }

[[organisation]]
id = "x"
may_load = ["x-door"]
''')
    cat = load_catalogue(path)
    assert cat.permitted("x", "x-door")
    assert cat.aps["x-door"].sd_aid == bytes.fromhex("A000000151455854")
    jpath = tmp_path / "cat.json"
    jpath.write_text(json.dumps({"ap": [], "organisation": []}))
    assert load_catalogue(jpath).aps == {}


@pytest.mark.parametrize(("data", "msg"), [
    ({"organisation": [{"id": "x", "may_load": ["nope"]}]}, "unknown AP"),
    ({"ap": [{"id": "r", "type": "C", "instance_aid": "D392F00043990001",
              "load_file_aid": "D392F0004C990001", "area": "regional",
              "image_bytes": {"vendor-a": 10}}],
      "organisation": [{"id": "x", "may_load": ["r"]}]}, "not a municipality"),
    ({"ap": [{"id": "a", "type": "A", "instance_aid": "D392F00041990001",
              "load_file_aid": "D392F0004C990001", "image_bytes": {"vendor-a": 10}}]},
     "access_key_ref"),
    ({"ap": [{"id": "a", "type": "Z"}]}, "type must be"),
])
def test_catalogue_errors(data: dict[str, object], msg: str) -> None:
    with pytest.raises(CatalogueError, match=msg):
        catalogue_from_dict(data)


# --- key store -------------------------------------------------------------------------


def test_file_keystore_requires_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_dev_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    store = FileKeyStore(path)
    assert isinstance(store, KeyStore)
    kdd = bytes.fromhex("47901A2B3C4D00010000")
    assert store.card_keys(kdd, 0x30) == dev_keystore().card_keys(kdd, 0x30)
    assert store.ap_secrets("org-a/org-a-cert-a").pin == "4827"
    for mode in (0o640, 0o604, 0o644):
        os.chmod(path, mode)
        with pytest.raises(KeyFileError, match="chmod 600"):
            FileKeyStore(path)
    os.chmod(path, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(KeyFileError):
        FileKeyStore(link)


def test_keys_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    write_dev_key_file(path)
    caplog.set_level(logging.DEBUG)
    store = FileKeyStore(path)
    secrets = store.ap_secrets("org-a/org-a-cert-a")
    keys = store.card_keys(bytes(10), 0)
    text = " ".join([repr(store), str(store), repr(secrets), repr(keys), repr(DEV_MASTER_KEYS),
                     caplog.text])
    for secret in (DEV_MASTER_KEYS.enc, secrets.access_key, keys.enc, keys.dek):
        assert secret.hex() not in text.lower()
    assert "4827" not in text
    assert kcv(secrets.access_key).hex().upper() in repr(secrets)
    # a malformed file names the entry, not the bytes
    bad = tmp_path / "bad.json"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"format": "cardap-loadsvc-keys/1", "master_keys": [
        {"kvn": "30", "enc": "00" * 15, "mac": "11" * 16, "dek": "22" * 16}]}).encode())
    os.close(fd)
    with pytest.raises(KeyFileError, match=r"master_keys\[0\]") as err:
        FileKeyStore(bad)
    assert "1111" not in str(err.value)


def test_unknown_key_version() -> None:
    from cardlib.errors import UnknownKeyVersion
    with pytest.raises(UnknownKeyVersion):
        dev_keystore().card_keys(bytes(10), 0x31)
