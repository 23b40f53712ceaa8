"""Configuration: defaults, the example file, and errors that name file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardapd.config import Config, changed_keys, load_config, needs_restart, plan_reload
from cardapd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cardapd.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.reason == "CONFIG_INVALID"
    return info.value.message


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg == Config.default() == load_config(None)
    assert cfg.daemon.state_dir == Path("/var/lib/cardapd")
    assert cfg.daemon.log_format == "json"
    assert cfg.daemon.shutdown_grace_s == 20.0
    assert cfg.sockets.dir == Path("/run/cardapd")
    assert cfg.sockets.gate.path == Path("/run/cardapd/gate.sock")
    assert cfg.sockets.ops.group == "cardap-ops"
    assert cfg.sockets.kiosk.mode == 0o660
    assert [s.role for s in cfg.sockets.enabled()] == ["kiosk", "gate", "ops"]
    assert cfg.metrics.listen == "127.0.0.1:9750"
    assert cfg.audit.path == Path("/var/lib/cardapd/audit.db")
    assert cfg.tap.read_on_insert
    assert cfg.pcsc.reconnect_interval_s == 1.0
    assert cfg.source == tmp_path / "cardapd.toml"


def test_the_example_file_loads_and_matches_the_defaults() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg == Config.default()


def test_derived_defaults_follow_the_directories(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[daemon]\nstate_dir = "/srv/c"\nruntime_dir = "/run/x"\n'))
    assert cfg.audit.path == Path("/srv/c/audit.db")
    assert cfg.sockets.kiosk.path == Path("/run/x/kiosk.sock")
    cfg = load_config(write(tmp_path, '[sockets]\ndir = "/run/y"\n[sockets.ops]\n'
                                      'path = "/run/z/ops.sock"\n'))
    assert cfg.sockets.gate.path == Path("/run/y/gate.sock")
    assert cfg.sockets.ops.path == Path("/run/z/ops.sock")


def test_full_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
        [daemon]
        log_level = "traffic"
        log_format = "text"
        shutdown_grace_s = 5
        [sockets.gate]
        mode = 0o640
        group = "turnstile"
        [sockets.kiosk]
        enabled = false
        [pcsc]
        readers_include = ["ACS*"]
        readers_exclude = ["*SAM*"]
        reconnect_interval_s = 2
        [tap]
        type_c_aids = ["d392f00043010001", "A000000003"]
        read_on_insert = false
        [diagnose]
        probe_type_c = false
        [metrics]
        listen = "[::1]:9999"
        [loading]
        """))
    assert cfg.daemon.log_level == "traffic"
    assert cfg.daemon.shutdown_grace_s == 5.0
    assert cfg.sockets.gate.mode == 0o640
    assert cfg.sockets.gate.group == "turnstile"
    assert [s.role for s in cfg.sockets.enabled()] == ["gate", "ops"]
    assert cfg.pcsc.readers_include == ("ACS*",)
    assert cfg.tap.type_c_aids == (bytes.fromhex("D392F00043010001"),
                                   bytes.fromhex("A000000003"))
    assert not cfg.tap.read_on_insert
    assert not cfg.diagnose.probe_type_c
    assert (cfg.metrics.host, cfg.metrics.port) == ("::1", 9999)
    assert cfg.metrics.listen == "[::1]:9999"


@pytest.mark.parametrize(("text", "expected"), [
    ('[tap]\ntype_c_aids = ["D392F00043", "zz11223344"]',
     "cardapd.toml: tap.type_c_aids[1]: not hex"),
    ('[tap]\ntype_c_aids = ["D392F0"]', "tap.type_c_aids[0]: an AID is 5 to 16 bytes, this is 3"),
    ('[tap]\ntype_c_aids = ["D392F00043", "d392f00043"]',
     "tap.type_c_aids[1]: duplicate of type_c_aids[0]"),
    ('[tap]\ntype_c_aids = "D392F00043"', "tap.type_c_aids: expected a list, got a string"),
    ("[tap]\ntype_c_aids = [1]", "tap.type_c_aids[0]: expected a non-empty string"),
    ('[daemon]\nlog_levle = "debug"', "daemon.log_levle: unknown key (did you mean 'log_level'?)"),
    ("[deamon]\n", "deamon: unknown key (did you mean 'daemon'?)"),
    ('[daemon]\nlog_level = "verbose"', "daemon.log_level: must be one of"),
    ('[daemon]\nstate_dir = "var/lib"', "daemon.state_dir: must be an absolute path"),
    ("[daemon]\nshutdown_grace_s = 0", "daemon.shutdown_grace_s: must be greater than 0"),
    ('[daemon]\nshutdown_grace_s = "20"', "shutdown_grace_s: expected a number, got a string"),
    ("[daemon]\nshutdown_grace_s = true", "expected a number, got a boolean"),
    ("[diagnose]\nprobe_type_c = 1", "probe_type_c: expected true or false, got an integer"),
    ('[sockets.gate]\nmode = "0666"', "sockets.gate.mode: 0666 gives access to every local user"),
    ("[sockets.gate]\nmode = 660", "sockets.gate.mode: 0o1224 is not a permission mode"),
    ('[sockets.gate]\nmode = "rw"', "sockets.gate.mode: not an octal mode"),
    ('[sockets.gate]\nmode = true', "sockets.gate.mode: expected an octal mode"),
    ('[sockets.gate]\npath = "/run/cardapd/ops.sock"', "ops.path: same path as sockets.gate"),
    ('[sockets.gate]\ngroup = ""', "sockets.gate.group: must not be empty"),
    ('[sockets.gate]\npath = "/' + "x" * 120 + '"', "sockets.gate.path: longer than the 107"),
    ("[sockets.fate]\n", "sockets.fate: unknown key (did you mean 'gate'?)"),
    ("[sockets.kiosk]\nenabled = false\n[sockets.gate]\nenabled = false\n"
     "[sockets.ops]\nenabled = false", "sockets: every socket is disabled"),
    ("sockets = 3", "sockets: expected a table, got an integer"),
    ('[metrics]\nlisten = "0.0.0.0:9750"', "metrics.listen: 0.0.0.0 is not a loopback address"),
    ('[metrics]\nlisten = "example.org:9750"', "metrics.listen: example.org is not a loopback"),
    ('[metrics]\nlisten = "127.0.0.1"', "metrics.listen: expected host:port"),
    ('[metrics]\nlisten = "127.0.0.1:70000"', "metrics.listen: expected host:port"),
    ('[pcsc]\nreaders_include = ["ok", ""]', "readers_include[1]: expected a non-empty string"),
    ("[pcsc]\nreconnect_interval_s = 0", "pcsc.reconnect_interval_s: must be greater than 0"),
    ('[audit]\npath = "audit.db"', "audit.path: must be an absolute path"),
    ('[loading]\nservice = "x"', "loading.service: unknown key; known: address, ca, cert"),
    ('[operators]\nroster = []', "operators.roster: expected a string, got a list"),
    ("loading = 3", "loading: expected a table, got an integer"),
    ("[daemon\n", "invalid TOML"),
])
def test_errors_name_the_file_the_key_and_the_problem(tmp_path: Path, text: str,
                                                       expected: str) -> None:
    message = error(tmp_path, text)
    assert expected in message
    assert message.startswith(str(tmp_path / "cardapd.toml") + ": ")


def test_non_loopback_metrics_need_an_explicit_yes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[metrics]\nlisten = "0.0.0.0:9750"\n'
                                      "allow_non_loopback = true\n"))
    assert cfg.metrics.host == "0.0.0.0"
    cfg = load_config(write(tmp_path, '[metrics]\nlisten = "localhost:1"\n'))
    assert cfg.metrics.port == 1


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read"):
        load_config(tmp_path / "nope.toml")


def test_the_error_carries_file_and_key_metadata(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[tap]\nread_on_insert = 1\n"))
    assert info.value.metadata == {"file": str(tmp_path / "cardapd.toml"),
                                   "key": "tap.read_on_insert"}


def test_config_is_frozen() -> None:
    cfg = Config.default()
    with pytest.raises(AttributeError):
        cfg.daemon.log_level = "debug"  # type: ignore[misc]


# --- reload (SIGHUP, docs/decisions.md D19) -----------------------------------------------

def test_reload_plan_applies_live_keys_and_keeps_restart_keys(tmp_path: Path) -> None:
    running = load_config(write(tmp_path, '[tap]\nread_on_insert = true\n'
                                          '[metrics]\nlisten = "127.0.0.1:9750"\n'))
    new = load_config(write(tmp_path, '[tap]\nread_on_insert = false\n'
                                      '[metrics]\nlisten = "127.0.0.1:9751"\n'
                                      '[sockets.kiosk]\npath = "/run/other/kiosk.sock"\n'
                                      '[pin]\nfloor = 2\n[presets]\nready_event = true\n'))
    plan = plan_reload(running, new)
    assert plan.live == ("tap.read_on_insert", "presets.ready_event", "pin.floor")
    assert plan.restart == ("sockets.kiosk.path", "metrics.listen")
    assert (plan.config.tap, plan.config.pin, plan.config.presets) == (new.tap, new.pin,
                                                                       new.presets)
    assert (plan.config.sockets, plan.config.metrics) == (running.sockets, running.metrics)
    # What runs after the reload differs from before in the live keys only.
    assert changed_keys(running, plan.config) == plan.live
    # Reloading the same file again applies nothing and still names the restart keys.
    again = plan_reload(plan.config, new)
    assert (again.live, again.restart) == ((), plan.restart)


def test_every_restart_key_keeps_its_running_value(tmp_path: Path) -> None:
    running = load_config(write(tmp_path, ""))
    new = load_config(write(tmp_path, '[daemon]\nstate_dir = "/srv/s"\nruntime_dir = "/srv/r"\n'
                                      'log_level = "debug"\n'
                                      '[sockets]\ndir = "/srv/sock"\n'
                                      '[sockets.ops]\ngroup = "wheel"\nmode = "0600"\n'
                                      '[pcsc]\nreconnect_interval_s = 5\nhotplug = "pnp"\n'
                                      '[metrics]\nenabled = false\n'
                                      '[audit]\npath = "/srv/audit.db"\n'
                                      '[operators]\nroster = "/srv/roster.db"\n'
                                      'biometric = "none"\nbus_address = "unix:path=/run/x"\n'))
    plan = plan_reload(running, new)
    assert plan.live == ("daemon.log_level",)
    assert set(plan.restart) == {
        "daemon.state_dir", "daemon.runtime_dir", "sockets.dir", "sockets.kiosk.path",
        "sockets.gate.path", "sockets.ops.path", "sockets.ops.group", "sockets.ops.mode",
        "pcsc.reconnect_interval_s", "pcsc.hotplug", "metrics.enabled", "audit.path",
        "audit.export_dir", "operators.roster", "operators.biometric",
        "operators.bus_address"}
    assert all(needs_restart(k) for k in plan.restart)
    assert changed_keys(running, plan.config) == ("daemon.log_level",)


def test_read_aps_and_secrets_compare_by_value(tmp_path: Path) -> None:
    key = tmp_path / "a.key"
    key.write_text("00" * 16)
    key.chmod(0o600)
    text = (f'[[read.aps]]\naid = "D392F000410A0002"\ntype = "A"\norganisation = "org-a"\n'
            f'access_key_file = "{key}"\npin = "caller"\n')
    first = load_config(write(tmp_path, text))
    assert changed_keys(first, load_config(write(tmp_path, text))) == ()
    key.write_text("11" * 16)
    assert plan_reload(first, load_config(write(tmp_path, text))).live == ("read.aps",)


@pytest.mark.parametrize(("text", "key", "what"), [
    ('[tap]\ntype_c_aids = ["D3921000310001010408"]', "tap.type_c_aids[0]", "input assist"),
    ('[tap]\ntype_c_aids = ["D392F00043010001", "d392100031"]', "tap.type_c_aids[1]",
     "input assist"),
    ('[tap]\ntype_c_aids = ["D39210003100010104"]', "tap.type_c_aids[0]", "input assist"),
    ('[tap]\ntype_c_aids = ["D392F000260100000001"]', "tap.type_c_aids[0]", "JPKI AP"),
    ('[tap]\ntype_c_aids = ["d3921000310001010402"]', "tap.type_c_aids[0]", "card face AP"),
    ('[tap]\ntype_c_aids = ["D3921000310001010401"]', "tap.type_c_aids[0]", "住基AP"),
    ('[[read.aps]]\naid = "D392100031000101"\ntype = "C"\norganisation = "org-a"',
     "read.aps[0].aid", "input assist"),
    ('[[read.aps]]\naid = "D392F00026"\ntype = "C"\norganisation = "org-a"',
     "read.aps[0].aid", "JPKI AP"),
])
def test_the_one_aid_check_names_the_key(tmp_path: Path, text: str, key: str,
                                         what: str) -> None:
    """An AID that could select the input assist AP (exact, prefix or partial, any case) or
    a built-in AP where a card AP is expected makes the whole file invalid."""
    message = error(tmp_path, text)
    assert f"cardapd.toml: {key}: " in message
    assert what in message


def test_preset_sets_in_the_file_say_where_they_went(tmp_path: Path) -> None:
    """Preset sets live on the roster per organisation (issue 16): an old [presets] table
    says so, naming the key."""
    message = error(tmp_path, '[presets]\nnew-staff = ["org-a-staff-c"]\n')
    assert "presets.new-staff: preset sets are kept on the roster per organisation" in message
    assert "cardapctl presets set" in message
    assert load_config(write(tmp_path, "[presets]\nready_event = true\n")).presets.ready_event
