"""The daemon's configuration: a TOML file read into frozen, validated dataclasses.

Every section and key is optional and an empty file gives a working daemon. Errors
name the file, the dotted key and the problem (`cardapd.toml: tap.type_c_aids[1]:
not hex`), and unknown keys are errors, so that a typo never silently falls back to
a default on a terminal nobody watches. `docs/config.example.toml` lists every key.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, cast

from cardapd.errors import ConfigError
from cardapd.gateconfig import (
    PinConfig,
    ReadApConfig,
    RevocationConfig,
    check_private,
    parse_pin,
    parse_read_ap,
    parse_revocation,
)

LogLevel = Literal["traffic", "debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
ROLES = ("kiosk", "gate", "ops")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_NOT_YET: tuple[str, ...] = ()  # sections later issues will define
_LOADING_KEYS = ("address", "ca", "cert", "key", "timeout_s")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """[daemon]: directories, logging and the shutdown grace period."""

    state_dir: Path = Path("/var/lib/cardapd")
    runtime_dir: Path = Path("/run/cardapd")
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"
    shutdown_grace_s: float = 20.0


@dataclass(frozen=True, slots=True)
class SocketConfig:
    """[sockets.<role>]: one role's Unix socket, its group and mode."""

    role: str
    path: Path
    group: str
    mode: int = 0o660
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class SocketsConfig:
    """[sockets]: the per-role sockets (kiosk, gate, ops)."""

    dir: Path
    kiosk: SocketConfig
    gate: SocketConfig
    ops: SocketConfig

    def enabled(self) -> list[SocketConfig]:
        """The enabled sockets, in role order."""
        return [s for s in (self.kiosk, self.gate, self.ops) if s.enabled]


@dataclass(frozen=True, slots=True)
class PcscConfig:
    """[pcsc]: which readers to own (glob patterns; empty include = every reader)."""

    readers_include: tuple[str, ...] = ()
    readers_exclude: tuple[str, ...] = ()
    reconnect_interval_s: float = 1.0
    # auto: udev (pyudev) where udevd runs, else PC/SC PnP only; udev: always; pnp: never.
    hotplug: str = "auto"


@dataclass(frozen=True, slots=True)
class TapConfig:
    """[tap]: the Type C AIDs read when a card is inserted (tap-to-ID)."""

    type_c_aids: tuple[bytes, ...] = ()
    read_on_insert: bool = True


@dataclass(frozen=True, slots=True)
class DiagnoseConfig:
    """[diagnose]: what card fault isolation probes."""

    probe_type_c: bool = True


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[metrics]: the Prometheus endpoint (loopback only unless explicitly allowed)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9750
    allow_non_loopback: bool = False

    @property
    def listen(self) -> str:
        """host:port, IPv6 hosts in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """[audit]: where the audit database lives (its head file sits beside it)."""

    path: Path
    verify_interval_s: float = 86400.0  # background chain verification (also at start)


@dataclass(frozen=True, slots=True)
class LoadingConfig:
    """[loading]: the loading service (mutual TLS); an empty address means none configured."""

    address: str = ""
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout_s: float = 30.0

    @property
    def configured(self) -> bool:
        """Whether a loading service is configured."""
        return bool(self.address)


BIOMETRICS = ("fprintd", "none")
HOTPLUG_SOURCES = ("auto", "udev", "pnp")


@dataclass(frozen=True, slots=True)
class OperatorsConfig:
    """[operators]: the roster, the fingerprint service, session and scan timeouts."""

    roster: Path = Path("/var/lib/cardapd/roster.db")
    biometric: str = "fprintd"
    bus_address: str = ""  # "": $DBUS_SYSTEM_BUS_ADDRESS, else the system bus
    idle_timeout_s: float = 300.0
    absolute_timeout_s: float = 28800.0
    verify_timeout_s: float = 30.0
    enroll_timeout_s: float = 120.0
    organisations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; `source` is the file it came from (None: defaults)."""

    daemon: DaemonConfig
    sockets: SocketsConfig
    pcsc: PcscConfig
    tap: TapConfig
    diagnose: DiagnoseConfig
    metrics: MetricsConfig
    audit: AuditConfig
    loading: LoadingConfig = field(default_factory=LoadingConfig)
    presets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    source: Path | None = field(default=None, compare=False)
    read_aps: tuple[ReadApConfig, ...] = ()
    pin: PinConfig = field(default_factory=PinConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)

    @classmethod
    def default(cls) -> Config:
        """The configuration of an empty file."""
        return _build({}, "<defaults>", None)


def load_config(path: Path | None) -> Config:
    """Read and validate `path` (None: the defaults); raises `ConfigError`."""
    if path is None:
        return Config.default()
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}",
                          metadata={"file": str(path)}) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", metadata={"file": str(path)}) from exc
    return _build(data, str(path), Path(path))


# --- reading one table ---------------------------------------------------------------

class _Table:
    """One TOML table being read: typed getters, then `done()` rejects unknown keys."""

    def __init__(self, src: str, prefix: str, data: object) -> None:
        self.src, self.prefix = src, prefix
        if not isinstance(data, dict):
            self.fail("", f"expected a table, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> NoReturn:
        key = self.key(name) if name else self.prefix
        raise ConfigError(f"{self.src}: {key}: {problem}",
                          metadata={"file": self.src, "key": key})

    def raw(self, name: str, default: object) -> object:
        """The value of `name` unchecked (the caller validates)."""
        self.known.append(name)
        return self.data.get(name, default)

    def get(self, name: str, kind: type[T], default: T) -> T:
        """The value of `name` checked against `kind` (bool is not an int here)."""
        self.known.append(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(name, f"expected {_KINDS.get(kind, kind.__name__)}, got {_kind(value)}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.get(name, float, default)
        if not lo < value <= hi:
            self.fail(name, f"must be greater than {lo:g} and at most {hi:g}, got {value:g}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def path(self, name: str, default: Path) -> Path:
        text = self.get(name, str, str(default))
        if not text.startswith("/"):
            self.fail(name, f"must be an absolute path, got {text!r}")
        return Path(text)

    def strings(self, name: str) -> tuple[str, ...]:
        values = self.get(name, list, [])
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value:
                self.fail(f"{name}[{i}]", f"expected a non-empty string, got {_kind(value)}")
        return tuple(values)

    def table(self, name: str) -> _Table:
        self.known.append(name)
        return _Table(self.src, self.key(name), self.data.get(name, {}))

    def done(self) -> None:
        for name in self.data:
            if name not in self.known:
                hint = difflib.get_close_matches(name, self.known, n=1)
                self.fail(name, "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint
                                                 else f"; known: {', '.join(self.known)}"))


_KINDS: dict[type, str] = {bool: "true or false", str: "a string", float: "a number",
                           int: "an integer", list: "a list", dict: "a table"}


def _kind(value: object) -> str:
    """The TOML name of a value's type, for messages."""
    return {bool: "a boolean", str: "a string", int: "an integer", float: "a float",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


# --- the sections ----------------------------------------------------------------------

def _build(data: dict[str, Any], src: str, source: Path | None) -> Config:
    root = _Table(src, "", data)
    for name in _NOT_YET:
        root.known.append(name)
        section = data.get(name)
        if section:  # an empty table is tolerated, keys are not
            first = next(iter(section)) if isinstance(section, dict) else ""
            root.fail(f"{name}.{first}" if first else name,
                      "not supported yet by this version of cardapd; remove it")
    daemon = _daemon(root.table("daemon"))
    sockets = _sockets(root.table("sockets"), daemon.runtime_dir)
    pcsc_t = root.table("pcsc")
    pcsc = PcscConfig(pcsc_t.strings("readers_include"), pcsc_t.strings("readers_exclude"),
                      pcsc_t.number("reconnect_interval_s", 1.0, 0.0, 60.0),
                      pcsc_t.choice("hotplug", "auto", HOTPLUG_SOURCES))
    pcsc_t.done()
    tap = _tap(root.table("tap"))
    diag_t = root.table("diagnose")
    diagnose = DiagnoseConfig(diag_t.get("probe_type_c", bool, True))
    diag_t.done()
    metrics = _metrics(root.table("metrics"))
    audit_t = root.table("audit")
    audit = AuditConfig(audit_t.path("path", daemon.state_dir / "audit.db"),
                        audit_t.number("verify_interval_s", 86400.0, 0.0, 2592000.0))
    audit_t.done()
    loading = _loading(root, data.get("loading", {}))
    presets = _presets(root.table("presets"))
    read_aps = _read(root.table("read"), source)
    pin = parse_pin(root.table("pin"))
    revocation = parse_revocation(root.table("revocation"))
    operators = _operators(root.table("operators"), daemon.state_dir)
    root.done()
    return Config(daemon, sockets, pcsc, tap, diagnose, metrics, audit, loading, presets,
                  source, read_aps, pin, revocation, operators)


def _operators(t: _Table, state_dir: Path) -> OperatorsConfig:
    """[operators]: roster path, biometric backend and bus, timeouts, organisations."""
    roster = t.path("roster", state_dir / "roster.db")
    biometric = t.choice("biometric", "fprintd", BIOMETRICS)
    bus = t.get("bus_address", str, "")
    idle = t.number("idle_timeout_s", 300.0, 0.0, 86400.0)
    absolute = t.number("absolute_timeout_s", 28800.0, 0.0, 7 * 86400.0)
    if absolute < idle:
        t.fail("absolute_timeout_s", "must be at least idle_timeout_s")
    verify_s = t.number("verify_timeout_s", 30.0, 0.0, 600.0)
    enroll_s = t.number("enroll_timeout_s", 120.0, 0.0, 1800.0)
    orgs_t = t.table("organisations")
    orgs = []
    for org in list(orgs_t.data):
        name = orgs_t.get(org, str, "")
        if not name.strip():
            orgs_t.fail(org, "expected the organisation's display name")
        orgs.append((org, name))
    orgs_t.done()
    t.done()
    return OperatorsConfig(roster, biometric, bus, idle, absolute, verify_s, enroll_s,
                           tuple(orgs))


def _read(t: _Table, source: Path | None) -> tuple[ReadApConfig, ...]:
    """[[read.aps]]: the APs the gate reads (see gateconfig); AIDs are unique."""
    entries = t.get("aps", list, [])
    t.done()
    aps: list[ReadApConfig] = []
    inline = False
    for i, raw in enumerate(entries):
        ap, has_inline = parse_read_ap(_Table(t.src, f"{t.key('aps')}[{i}]", raw))
        if any(a.aid == ap.aid for a in aps):
            t.fail(f"aps[{i}].aid", "the same AID is configured twice")
        aps.append(ap)
        inline = inline or has_inline
    if inline:
        check_private(t, source)
    return tuple(aps)


def _loading(root: _Table, raw: object) -> LoadingConfig:
    """[loading]; unknown keys are "not supported yet" (later issues add keys here)."""
    if not isinstance(raw, dict):
        root.fail("loading", f"not supported yet in this form: expected a table "
                             f"([loading] address = \"host:port\"), got {_kind(raw)}")
    for name in raw:
        if name not in _LOADING_KEYS:
            root.fail(f"loading.{name}", "not supported yet by this version of cardapd "
                                         f"(known keys: {', '.join(_LOADING_KEYS)})")
    t = root.table("loading")
    address = t.get("address", str, "")
    if address:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            t.fail("address", f"expected host:port, got {address!r}")
    paths = {n: (t.path(n, Path("/")) if n in raw else None) for n in ("ca", "cert", "key")}
    cfg = LoadingConfig(address, paths["ca"], paths["cert"], paths["key"],
                        t.number("timeout_s", 30.0, 0.0, 600.0))
    t.done()
    if address and None in paths.values():
        missing = [n for n, v in paths.items() if v is None]
        t.fail(missing[0], "required with loading.address (mutual TLS needs ca, cert, key)")
    return cfg


def _presets(t: _Table) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """[presets]: name = ["ap-id", ...], loaded in order."""
    out = []
    for name in list(t.data):
        ids = t.strings(name)
        if not ids:
            t.fail(name, "a preset names at least one AP")
        if len(set(ids)) != len(ids):
            t.fail(name, "names an AP twice")
        out.append((name, ids))
    t.done()
    return tuple(out)


def _daemon(t: _Table) -> DaemonConfig:
    cfg = DaemonConfig(
        state_dir=t.path("state_dir", Path("/var/lib/cardapd")),
        runtime_dir=t.path("runtime_dir", Path("/run/cardapd")),
        log_level=cast(LogLevel, t.choice("log_level", "info",
                                          ("debug", "info", "warning", "error", "traffic"))),
        log_format=cast(LogFormat, t.choice("log_format", "json", ("json", "text"))),
        shutdown_grace_s=t.number("shutdown_grace_s", 20.0, 0.0, 600.0))
    t.done()
    return cfg


def _mode(t: _Table, name: str) -> int:
    """A socket mode from "0660" / "660" / 0o660; world bits and special bits refused."""
    raw = t.raw(name, 0o660)
    if isinstance(raw, str):
        try:
            mode = int(raw.removeprefix("0o"), 8)
        except ValueError:
            t.fail(name, f"not an octal mode: {raw!r} (write it like \"0660\")")
    elif isinstance(raw, int) and not isinstance(raw, bool):
        mode = raw
    else:
        t.fail(name, f"expected an octal mode like \"0660\", got {_kind(raw)}")
    if not 0 <= mode <= 0o777:
        t.fail(name, f"{mode:#o} is not a permission mode; write it as \"0660\" or 0o660 "
                     "(a bare 660 is decimal)")
    if mode & 0o007:
        t.fail(name, f"{mode:04o} gives access to every local user; the role group is "
                     "what separates kiosk, gate and ops (use 0660)")
    return mode


def _sockets(t: _Table, runtime_dir: Path) -> SocketsConfig:
    base = t.path("dir", runtime_dir)
    socks: dict[str, SocketConfig] = {}
    for role in ROLES:
        r = t.table(role)
        path = r.path("path", base / f"{role}.sock")
        if len(str(path).encode()) > _UNIX_PATH_MAX:
            r.fail("path", f"longer than the {_UNIX_PATH_MAX} bytes a Unix socket path allows")
        group = r.get("group", str, f"cardap-{role}")
        if not group:
            r.fail("group", "must not be empty")
        socks[role] = SocketConfig(role, path, group, _mode(r, "mode"),
                                   r.get("enabled", bool, True))
        r.done()
    t.done()
    seen: dict[Path, str] = {}
    for role, sock in socks.items():
        if sock.enabled and sock.path in seen:
            t.fail(f"{role}.path", f"same path as sockets.{seen[sock.path]}.path ({sock.path})")
        if sock.enabled:
            seen[sock.path] = role
    if not any(s.enabled for s in socks.values()):
        t.fail("", "every socket is disabled: the daemon would serve nobody")
    return SocketsConfig(base, socks["kiosk"], socks["gate"], socks["ops"])


def _tap(t: _Table) -> TapConfig:
    aids: list[bytes] = []
    for i, text in enumerate(t.strings("type_c_aids")):
        key = f"type_c_aids[{i}]"
        try:
            aid = bytes.fromhex(text)
        except ValueError:
            t.fail(key, f"not hex: {text!r} (write it like \"D392F000260100000001\")")
        if not 5 <= len(aid) <= 16:
            t.fail(key, f"an AID is 5 to 16 bytes, this is {len(aid)}")
        if aid in aids:
            t.fail(key, f"duplicate of type_c_aids[{aids.index(aid)}]")
        aids.append(aid)
    cfg = TapConfig(tuple(aids), t.get("read_on_insert", bool, True))
    t.done()
    return cfg


def _metrics(t: _Table) -> MetricsConfig:
    enabled = t.get("enabled", bool, True)
    listen = t.get("listen", str, "127.0.0.1:9750")
    allow = t.get("allow_non_loopback", bool, False)
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        t.fail("listen", f"expected host:port (IPv6 as [::1]:9750), got {listen!r}")
    if not allow:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            t.fail("listen", f"{host} is not a loopback address; metrics stay on this "
                             "machine unless metrics.allow_non_loopback = true")
    t.done()
    return MetricsConfig(enabled, host, int(port_text), allow)


# --- reload (SIGHUP) -----------------------------------------------------------------

# Keys a running daemon cannot change: they name sockets it bound, stores it opened, the
# metrics listener and the fingerprint service it connected to at start. A reload keeps
# their running values and says that they wait for a restart (docs/decisions.md D19).
RESTART_KEYS = ("daemon.state_dir", "daemon.runtime_dir", "sockets", "pcsc.reconnect_interval_s",
                "pcsc.hotplug", "metrics", "audit", "operators.roster", "operators.biometric",
                "operators.bus_address")
# Dataclass paths that are written differently in the file.
_FILE_KEYS = {"read_aps": "read.aps", "metrics.host": "metrics.listen",
              "metrics.port": "metrics.listen"}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does: `config` runs from now on, `live` keys apply at once, `restart`
    keys changed in the file but keep their running values until the next start."""

    config: Config
    live: tuple[str, ...]
    restart: tuple[str, ...]


def changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """The keys whose values differ, as written in the file (`tap.read_on_insert`,
    `sockets.kiosk.path`, `read.aps`, `metrics.listen`), in file order."""
    out: list[str] = []

    def walk(prefix: str, a: object, b: object) -> None:
        if is_dataclass(a) and type(a) is type(b):
            for f in fields(a):
                if f.compare:
                    walk(f"{prefix}.{f.name}" if prefix else f.name,
                         getattr(a, f.name), getattr(b, f.name))
        elif a != b:
            key = _FILE_KEYS.get(prefix, prefix)
            if key not in out:
                out.append(key)

    walk("", old, new)
    return tuple(out)


def needs_restart(key: str) -> bool:
    """Whether a changed `key` only takes effect at the next start."""
    return any(key == k or key.startswith(k + ".") for k in RESTART_KEYS)


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Split the changes of a validated new file into live ones and ones for a restart."""
    keep = replace(
        new,
        daemon=replace(new.daemon, state_dir=running.daemon.state_dir,
                       runtime_dir=running.daemon.runtime_dir),
        sockets=running.sockets,
        pcsc=replace(new.pcsc, reconnect_interval_s=running.pcsc.reconnect_interval_s,
                     hotplug=running.pcsc.hotplug),
        metrics=running.metrics, audit=running.audit,
        operators=replace(new.operators, roster=running.operators.roster,
                          biometric=running.operators.biometric,
                          bus_address=running.operators.bus_address))
    changed = changed_keys(running, new)
    return ReloadPlan(keep, tuple(k for k in changed if not needs_restart(k)),
                      tuple(k for k in changed if needs_restart(k)))
