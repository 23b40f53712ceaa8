"""[operators] configuration and the fprintd user mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardapd.config import load_config
from cardapd.errors import ConfigError
from cardapd.operators.biometric import check_user
from cardapd.operators.login import fprint_user


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cardapd.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_state_dir(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[daemon]\nstate_dir = "/srv/c"\n'))
    assert cfg.operators.roster == Path("/srv/c/roster.db")
    assert cfg.operators.biometric == "fprintd"
    assert cfg.operators.idle_timeout_s == 300


def test_keys_and_organisations(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[operators]\nbiometric = "none"\nidle_timeout_s = 60\n'
                                      'bus_address = "unix:path=/run/x"\n'
                                      '[operators.organisations]\norg-a = "A"\n'))
    assert cfg.operators.organisations == (("org-a", "A"),)
    assert cfg.operators.bus_address == "unix:path=/run/x"


@pytest.mark.parametrize(("text", "expected"), [
    ('[operators]\nbiometric = "pam"', "operators.biometric: must be one of"),
    ("[operators]\nidle_timeout_s = 100\nabsolute_timeout_s = 50",
     "operators.absolute_timeout_s: must be at least"),
    ("[operators]\nroster_path = 1", "operators.roster_path: unknown key"),
    ('[operators.organisations]\norg-a = ""', "operators.organisations.org-a"),
])
def test_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in info.value.message


def test_fprint_user_is_injective_and_safe() -> None:
    a, b = fprint_user("a.b", "c"), fprint_user("a", "b.c")
    assert a != b
    assert check_user(a) == a
    assert fprint_user("org-a", "op-1") == fprint_user("org-a", "op-1")
