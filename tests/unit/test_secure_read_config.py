"""[[read.aps]], [pin] and [revocation]: strict validation, secret files, hidden secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cardapd.config import load_config
from cardapd.errors import ConfigError
from cardapd.myna.custom import TagLocator

KEY = "00112233445566778899AABBCCDDEEFF"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "cardapd.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def error(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text, mode))
    return info.value.message


def ap(**kw: object) -> str:
    base: dict[str, object] = {"aid": "D392F000410A0002", "type": "A",
                               "organisation": "org-a", "access_key_hex": KEY,
                               "pin": "caller"}
    base.update(kw)
    body = "".join(f"{k} = {v!s}\n" if isinstance(v, int) or str(v).startswith("{")
                   else f'{k} = "{v}"\n' for k, v in base.items() if v is not None)
    return "[[read.aps]]\n" + body


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg.read_aps == ()
    assert cfg.pin.floor == 1
    assert (cfg.revocation.interval_s, cfg.revocation.stale_policy) == (86400.0,
                                                                        "allow_with_warning")


def test_full_entries(tmp_path: Path) -> None:
    text = (ap() + ap(aid="D392F000440A0003", type="D", pin="system", system_pin="4827")
            + ap(aid="D392F000580A0004", type="custom", access_key_hex=None, pin=None,
                 locator='{ tag = "C1" }')
            + "[pin]\nfloor = 2\n[revocation]\nmax_age_s = 60\nstale_policy = \"deny\"\n")
    cfg = load_config(write(tmp_path, text))
    a, d, c = cfg.read_aps
    assert a.access_key is not None
    assert a.access_key.value == bytes.fromhex(KEY)
    assert (a.pin, d.pin) == ("caller", "system")
    assert d.system_pin is not None
    assert d.system_pin.value == b"4827"
    assert c.locator == TagLocator(0xC1)
    assert cfg.pin.floor == 2
    assert (cfg.revocation.max_age_s, cfg.revocation.stale_policy) == (60.0, "deny")
    shown = repr(cfg) + str(cfg)
    assert KEY not in shown.upper()
    assert "4827" not in shown


def test_key_file_must_be_private(tmp_path: Path) -> None:
    key = tmp_path / "a.key"
    key.write_text(KEY + "\n")
    os.chmod(key, 0o640)
    text = ap(access_key_hex=None, access_key_file=str(key))
    assert "chmod 600" in error(tmp_path, text)
    os.chmod(key, 0o600)
    cfg = load_config(write(tmp_path, text, 0o644))  # no inline secret: any config mode
    assert cfg.read_aps[0].access_key is not None
    link = tmp_path / "link.key"
    link.symlink_to(key)
    assert "cannot open" in error(tmp_path, ap(access_key_hex=None, access_key_file=str(link)))


@pytest.mark.parametrize(("text", "needle"), [
    (ap(access_key_hex="XYZ"), "not hex"),
    (ap(access_key_hex="0011"), "16 or 32 bytes"),
    (ap(type="B"), "must be one of"),
    (ap(pin="maybe"), "\"system\" or \"caller\""),
    (ap(pin="system"), "system_pin_file"),
    (ap(pin="system", system_pin="12"), "4-16 printable"),
    (ap(access_key_hex=None), "access_key_file"),
    (ap(organisation=None), "organisation"),
    (ap(aid="D392"), "5 to 16 bytes"),
    (ap(type="custom", access_key_hex=None, pin=None), "locator"),
    (ap(type="custom", access_key_hex=None, pin=None, locator="{ offset = 2, length = 12 }"),
     "13 bytes"),
    (ap(locator='{ tag = "C1" }'), "only for custom"),
    (ap(type="C", pin=None), "without a key or PIN"),
    (ap(colour="red"), "unknown key"),
    (ap() + ap(), "twice"),
    ("[pin]\nfloor = 0\n", "1-15"),
    ("[revocation]\nstale_policy = \"maybe\"\n", "must be one of"),
    ("[revocation]\ninterval_s = 0\n", "greater than 0"),
])
def test_errors(tmp_path: Path, text: str, needle: str) -> None:
    message = error(tmp_path, text)
    assert needle in message
    assert KEY not in message


def test_inline_secret_needs_a_private_config(tmp_path: Path) -> None:
    assert "chmod 600" in error(tmp_path, ap(), mode=0o644)
