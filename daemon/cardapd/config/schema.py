"""The configuration schema: every key of cardapd.toml, written once.

Each key is a field of a frozen msgspec Struct: its type (and bounds), its default, its
documentation line and whether a change waits for a restart (`key(…, restart=True)`).
Everything else derives from here: reading and checking a file (`cardapd.config.load`),
the reload plan (`cardapd.config.reload`, docs/decisions.md D19), and the reference in
docs/configuration.md and docs/config.example.toml (`cardapd.config.reference`; a test
fails when they differ from what this schema generates). Checks that span keys live in
each section's `__post_init__`. Unknown keys are errors.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from cardapd.config.values import (
    DERIVED,
    UNIX_PATH_MAX,
    Aid,
    GroupName,
    InlineKey,
    InlinePin,
    KeyFile,
    ListenAddress,
    Organisations,
    PinFile,
    ServiceAddress,
    SocketMode,
    UserIdFormats,
    at,
    within,
)
from cardapd.myna.custom import UserIdLocator
from cardapd.myna.userid import DEFAULT_RULE, Charset, UserIdRule

ROLES = ("kiosk", "gate", "ops")
LogLevel = Literal["traffic", "debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
Language = Literal["ja", "en"]
Hotplug = Literal["auto", "udev", "pnp"]
Biometric = Literal["fprintd", "none"]
ApKind = Literal["A", "C", "D", "custom"]
PinMode = Literal["system", "caller"]
StalePolicy = Literal["allow_with_warning", "deny"]


def key(doc: str, *, restart: bool = False, shown: str = "", example: str = "",
        **bounds: Any) -> msgspec.Meta:
    """A key's documentation line, its restart-only mark, how its default reads when it
    is derived (`shown`), an example for keys whose default is empty, and its bounds."""
    return msgspec.Meta(description=doc, extra={"restart": restart, "shown": shown,
                                                "example": example}, **bounds)


class Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A table of cardapd.toml: unknown keys are errors, values never change."""


def _seconds(doc: str, default_hi: float, **kw: Any) -> msgspec.Meta:
    return key(doc, gt=0.0, le=default_hi, **kw)


class DaemonConfig(Section, frozen=True):
    """[daemon]: directories, logging and the shutdown grace period."""

    state_dir: Annotated[Path, key(
        "Persistent state: the audit log, the roster, the journal, the revocation store. "
        "systemd's StateDirectory= creates it.", restart=True)] = Path("/var/lib/cardapd")
    runtime_dir: Annotated[Path, key(
        "Runtime files; the role sockets live here unless [sockets] dir says otherwise. "
        "systemd's RuntimeDirectory= creates it.", restart=True)] = Path("/run/cardapd")
    log_level: Annotated[LogLevel, key(
        "debug | info | warning | error | traffic (every APDU, PINs and keys "
        "redacted).")] = "info"
    log_format: Annotated[LogFormat, key(
        "json (one object per line, for journald and collectors) | text (for people). "
        "Under systemd, entries are native journal entries either way.")] = "json"
    language: Annotated[Language, key(
        "ja | en: the language of the texts for people (error messages, diagnoses, "
        "prompts, the yearly report) when a call's gRPC metadata accept-language names "
        "none of them. Logs, metrics and audit rows are always codes and English.")] = "ja"
    shutdown_grace_s: Annotated[float, _seconds(
        "Seconds a stop waits for a card write in progress to finish; keep it below the "
        "unit's TimeoutStopSec (30).", 600.0)] = 20.0


class SocketConfig(Section, frozen=True):
    """[sockets.<role>]: one role's Unix socket."""

    path: Annotated[Path, key("The socket's path.", shown="<sockets.dir>/<role>.sock",
                              restart=True)] = DERIVED
    group: Annotated[GroupName | None, key(
        "The group allowed in (mode 0660): the role's clients.", shown="cardap-<role>",
        restart=True)] = None
    mode: Annotated[SocketMode, key(
        "Permission mode: a string \"0660\" or a TOML octal 0o660; world bits are "
        "refused.", restart=True)] = SocketMode(0o660)
    enabled: Annotated[bool, key("Serve this role at all.", restart=True)] = True
    max_connections: Annotated[int, key(
        "Open client connections this socket accepts at once; more are closed as they "
        "come (a flood of one socket never takes another's file descriptors).",
        restart=True, ge=1, le=4096)] = 128


class RoleSocket(msgspec.Struct, frozen=True):
    """An enabled socket with its role (what `SocketsConfig.enabled` lists)."""

    role: str
    path: Path
    group: str
    mode: int
    max_connections: int = 128


class SocketsConfig(Section, frozen=True):
    """[sockets]: one Unix socket per client role, each with its group."""

    dir: Annotated[Path, key("Directory of the role sockets.", shown="<daemon.runtime_dir>",
                             restart=True)] = DERIVED
    handshake_timeout_s: Annotated[float, _seconds(
        "A new connection that has not sent its HTTP/2 preface and SETTINGS within this "
        "time is closed (local clients send them at once).", 120.0, restart=True)] = 5.0
    idle_timeout_s: Annotated[float, _seconds(
        "A connection without a call for this long is closed (clients reconnect by "
        "themselves; an open WatchCardEvents stream is a call).", 86400.0,
        restart=True)] = 600.0
    keepalive_s: Annotated[float, _seconds(
        "The daemon pings a connection with calls open after this long without traffic, "
        "and closes it when the ping is not answered within 20 s (a stopped client).",
        7200.0, restart=True)] = 60.0
    min_client_ping_s: Annotated[float, _seconds(
        "Clients may ping at most this often (keepalive enforcement): a client that pings "
        "more often is sent GOAWAY after two such pings.", 3600.0, restart=True)] = 10.0
    kiosk: SocketConfig = msgspec.field(default_factory=SocketConfig)
    gate: SocketConfig = msgspec.field(default_factory=SocketConfig)
    ops: SocketConfig = msgspec.field(default_factory=SocketConfig)

    def enabled(self) -> list[RoleSocket]:
        """The enabled sockets, in role order."""
        return [RoleSocket(role, s.path, s.group or "", s.mode, s.max_connections)
                for role, s in ((r, getattr(self, r)) for r in ROLES) if s.enabled]

    def resolved(self, runtime_dir: Path) -> SocketsConfig:
        """Derived defaults filled in (dir, each path and group) and the whole checked."""
        base = self.dir if self.dir != DERIVED else runtime_dir
        socks: dict[str, SocketConfig] = {}
        for role in ROLES:
            sock: SocketConfig = getattr(self, role)
            path = sock.path if sock.path != DERIVED else base / f"{role}.sock"
            if len(str(path).encode()) > UNIX_PATH_MAX:
                raise ValueError(at(f"{role}.path", f"longer than the {UNIX_PATH_MAX} bytes "
                                                     "a Unix socket path allows"))
            socks[role] = msgspec.structs.replace(
                sock, path=path, group=sock.group or GroupName(f"cardap-{role}"))
        seen: dict[Path, str] = {}
        for role, sock in socks.items():
            if sock.enabled and sock.path in seen:
                raise ValueError(at(f"{role}.path", f"same path as sockets.{seen[sock.path]}"
                                                     f".path ({sock.path})"))
            if sock.enabled:
                seen[sock.path] = role
        if not seen:
            raise ValueError(at("", "every socket is disabled: the daemon would serve nobody"))
        return msgspec.structs.replace(self, dir=base, **socks)


class PcscConfig(Section, frozen=True):
    """[pcsc]: which readers to own, and how to follow them."""

    readers_include: Annotated[tuple[Annotated[str, msgspec.Meta(min_length=1)], ...], key(
        "Glob patterns on PC/SC reader names; empty = every reader.",
        example='["ACS ACR1252*", "SONY FeliCa*"]')] = ()
    readers_exclude: Annotated[tuple[Annotated[str, msgspec.Meta(min_length=1)], ...], key(
        "Glob patterns of readers to leave alone.", example='["*SAM*"]')] = ()
    reconnect_interval_s: Annotated[float, _seconds(
        "Seconds between attempts to re-establish the PC/SC context after pcscd went "
        "away.", 60.0, restart=True)] = 1.0
    hotplug: Annotated[Hotplug, key(
        "Reader hotplug: auto watches udev (USB CCID readers, through pyudev) where udevd "
        "runs and PC/SC PnP notifications otherwise; udev always; pnp never.",
        restart=True)] = "auto"


class CardConfig(Section, frozen=True):
    """[card]: how long the daemon waits for a card (docs/decisions.md D28). Past a
    deadline the operation ends with CARD_UNRESPONSIVE, the card is reset once it answers
    again, and a write cut short stays in the journal to be reconciled."""

    apdu_timeout_s: Annotated[float, key(
        "The longest one command may take. Public figures: GlobalPlatform LOAD blocks "
        "45 ms-0.9 s, a flash-erasing command 1.6 s, libccid's default timeout 3 s; ISO "
        "7816-3 allows a T=1 card up to ~51 s per block (BWI 9).", gt=0.5, le=600.0)] = 30.0
    read_timeout_s: Annotated[float, key(
        "The whole card work of one read: identification and tap-to-ID, ReadUserID, "
        "Diagnose (per reader), ListCardAPs, waiting for the reader included; below the "
        "10 s most clients give a call.", gt=0.5, le=600.0)] = 5.0
    write_timeout_s: Annotated[float, key(
        "The whole card session of one AP's load, delete or reconciliation, the loading "
        "service's round trips included.", ge=10.0, le=3600.0)] = 300.0


class TapConfig(Section, frozen=True):
    """[tap]: the Type C APs read when a card is inserted (tap-to-ID)."""

    type_c_aids: Annotated[tuple[Aid, ...], key(
        "Type C (common card AP) AIDs read at insertion, in hex (5-16 bytes each), tried "
        "in order; empty = no tap-to-ID.", example='["D392F00043010001"]')] = ()
    read_on_insert: Annotated[bool, key("Read them when a card is inserted.")] = True

    def __post_init__(self) -> None:
        for i, aid in enumerate(self.type_c_aids):
            if aid in self.type_c_aids[:i]:
                raise ValueError(at(f"type_c_aids[{i}]", "duplicate of type_c_aids"
                                                         f"[{self.type_c_aids.index(aid)}]"))


class DiagnoseConfig(Section, frozen=True):
    """[diagnose]: what card fault isolation probes."""

    probe_type_c: Annotated[bool, key("Also probe the [tap] Type C AIDs.")] = True


class MetricsConfig(Section, frozen=True):
    """[metrics]: the Prometheus endpoint (loopback only unless explicitly allowed)."""

    enabled: Annotated[bool, key("Serve /metrics over HTTP.", restart=True)] = True
    listen: Annotated[ListenAddress, key(
        "host:port (IPv6 as \"[::1]:9750\"); loopback only unless allow_non_loopback.",
        restart=True)] = ListenAddress("127.0.0.1:9750")
    allow_non_loopback: Annotated[bool, key(
        "Allow a listen address other than loopback.", restart=True)] = False

    def __post_init__(self) -> None:
        if not self.allow_non_loopback and not self.listen.is_loopback():
            raise ValueError(at("listen", f"{self.listen.host} is not a loopback address; "
                                          "metrics stay on this machine unless "
                                          "metrics.allow_non_loopback = true"))

    @property
    def host(self) -> str:
        """The host to bind (brackets removed)."""
        return self.listen.host

    @property
    def port(self) -> int:
        """The port to bind."""
        return self.listen.port


class AuditConfig(Section, frozen=True):
    """[audit]: the hash-chained operation history."""

    path: Annotated[Path, key(
        "The audit database; its head anchor audit.head sits beside it.",
        shown="<daemon.state_dir>/audit.db", restart=True)] = DERIVED
    verify_interval_s: Annotated[float, _seconds(
        "At start and then every this many seconds: seal the day's segment, verify what is "
        "new (in a child process), export sealed segments, apply [retention] and send a "
        "checkpoint of the chain head to the journal and the loading service.", 2592000.0,
        restart=True)] = 86400.0
    export_dir: Annotated[Path, key(
        "Where each sealed, verified segment is exported (audit-segment-NNNNNNNN.jsonl.gz); "
        "collect the files off the terminal, they are what retention relies on.",
        shown="<daemon.state_dir>/audit-export", restart=True)] = DERIVED
    terminal_id: Annotated[str, key(
        "This terminal's id in checkpoints and exports (empty: the CN of the [loading] "
        "certificate, else the host name).", restart=True,
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")] = ""
    refused_window_s: Annotated[float, _seconds(
        "Refused calls (wrong socket, no session, malformed, …) are audited per socket, "
        "method and reason once at the first and then as one count per this many "
        "seconds, so no client can grow the log faster than that.", 3600.0,
        restart=True)] = 60.0


class RetentionConfig(Section, frozen=True):
    """[retention]: how long each store keeps what it no longer needs (0: forever)."""

    audit_days: Annotated[float, key(
        "Drop audit segments whose last row is older than this, once they are sealed, "
        "verified and exported, and the yearly report of each of their years was made "
        "after that year ended.", ge=0.0, le=36500.0, restart=True)] = 400.0
    journal_days: Annotated[float, key(
        "Drop finished load/delete journal rows (nothing left to reconcile) older than "
        "this.", ge=0.0, le=36500.0, restart=True)] = 90.0
    revocation_days: Annotated[float, key(
        "Drop pulled revocation entries that say 'in operation' (the same as no entry) "
        "changed longer ago than this; suspended and abolished entries stay.",
        ge=0.0, le=36500.0, restart=True)] = 400.0


class LoadingConfig(Section, frozen=True):
    """[loading]: the loading service, over mutual TLS; no address = none configured."""

    address: Annotated[ServiceAddress, key("The service, host:port.",
                                           example='"loading.example:7443"')] = \
        ServiceAddress("")
    ca: Annotated[Path | None, key("The service's CA (PEM).",
                                   example='"/etc/cardapd/tls/ca.pem"')] = None
    cert: Annotated[Path | None, key(
        "This terminal's certificate (PEM; CN = terminal id, O = organisation).",
        example='"/etc/cardapd/tls/terminal.pem"')] = None
    key: Annotated[Path | None, key("This terminal's private key (PEM).",
                                    example='"/etc/cardapd/tls/terminal.key"')] = None
    timeout_s: Annotated[float, _seconds("Seconds to wait for the service's answers.",
                                         600.0)] = 30.0
    schedule_interval_s: Annotated[float, key(
        "Fetch the service's schedule (hours, closures, announced maintenance, its clock) "
        "every this many seconds (and 30 s after a failure).", ge=1.0, le=86400.0)] = 600.0

    def __post_init__(self) -> None:
        if self.address:
            for name in ("ca", "cert", "key"):
                if getattr(self, name) is None:
                    raise ValueError(at(name, "required with loading.address (mutual TLS "
                                              "needs ca, cert, key)"))

    @property
    def configured(self) -> bool:
        """Whether a loading service is configured."""
        return bool(self.address)


class PresetsConfig(Section, frozen=True):
    """[presets]: the preset-ready event (the sets are on the roster: cardapctl presets)."""

    ready_event: Annotated[bool, key(
        "When a My Number Card is inserted while an operator is logged in at the kiosk and "
        "the default preset of their organisation has APs the card lacks, send a "
        "PRESET_READY card event on the kiosk socket; the kiosk confirms with LoadAP "
        "default_preset (nothing is written without that call).")] = False


class ReadApConfig(Section, frozen=True):
    """One [[read.aps]] table: an AP the gate reads, how to authenticate, where the ID is."""

    aid: Annotated[Aid, key("The AP's instance AID, hex.")]
    type: Annotated[ApKind, key("\"A\", \"D\", \"custom\" or \"C\".")]
    organisation: Annotated[str, key("Whose revocation feed covers this AP.",
                                     min_length=1)]
    access_key_file: Annotated[KeyFile | None, key(
        "A/D: the AP's access key, hex, in a 0600 file.")] = None
    access_key_hex: Annotated[InlineKey | None, key(
        "A/D, tests only: the key inline (the configuration file must be 0600).")] = None
    pin: Annotated[PinMode | None, key(
        "A/D: \"caller\" (ReadUserID.pin) or \"system\" (system_pin_file).")] = None
    system_pin_file: Annotated[PinFile | None, key(
        "With pin = \"system\": the PIN in a 0600 file.")] = None
    system_pin: Annotated[InlinePin | None, key(
        "With pin = \"system\", tests only: the PIN inline.")] = None
    locator: Annotated[UserIdLocator | None, key(
        "custom: where the user ID is: {offset = N, length = 13} or {tag = \"C1\"}.")] = None
    user_id_charset: Annotated[Charset, key(
        "The bytes a user ID of this AP may hold: printable (ASCII 0x20-0x7E) or binary "
        "(any 13 bytes; reads then give 0x + 26 hex digits for an ID that is not "
        "printable).")] = "printable"

    def __post_init__(self) -> None:
        for file_key, inline_key in (("access_key_file", "access_key_hex"),
                                     ("system_pin_file", "system_pin")):
            if getattr(self, file_key) is not None and getattr(self, inline_key) is not None:
                raise ValueError(at(inline_key, f"set {file_key} or {inline_key}, not both"))
        if self.type in ("A", "D"):
            if self.access_key is None:
                raise ValueError(at("access_key_file", f"a Type {self.type} AP needs "
                                                       "access_key_file (or access_key_hex "
                                                       "for tests)"))
            if self.pin is None:
                raise ValueError(at("pin", f"must be \"system\" or \"caller\" for a Type "
                                           f"{self.type} AP"))
            if self.pin == "system" and self.pin_secret is None:
                raise ValueError(at("system_pin_file", "pin = \"system\" needs "
                                                       "system_pin_file (or system_pin for "
                                                       "tests)"))
            if self.pin == "caller" and self.pin_secret is not None:
                raise ValueError(at("system_pin", "only with pin = \"system\""))
        else:
            for name in ("access_key_file", "access_key_hex", "system_pin_file",
                         "system_pin"):
                if getattr(self, name) is not None:
                    raise ValueError(at(name, f"a {self.type} AP is read without a key or "
                                              "PIN; remove it"))
            if self.pin is not None:
                raise ValueError(at("pin", f"a {self.type} AP is read without a key or "
                                           "PIN; remove it"))
        if self.type == "custom" and self.locator is None:
            raise ValueError(at("locator", "a custom AP needs a locator table: {offset = N, "
                                           "length = 13} or {tag = \"C1\"}"))
        if self.type != "custom" and self.locator is not None:
            raise ValueError(at("locator", "only for custom APs"))

    @property
    def access_key(self) -> KeyFile | InlineKey | None:
        """The AP's access key, from its file or inline."""
        return self.access_key_file or self.access_key_hex

    @property
    def pin_secret(self) -> PinFile | InlinePin | None:
        """The system PIN, from its file or inline."""
        return self.system_pin_file or self.system_pin

    @property
    def inline_secret(self) -> bool:
        """Whether a secret stands in the configuration file itself."""
        return self.access_key_hex is not None or self.system_pin is not None


class ReadConfig(Section, frozen=True):
    """[read]: the APs the gate reads with ReadUserID type A, D or custom."""

    aps: Annotated[tuple[ReadApConfig, ...], key(
        "One [[read.aps]] table per AP (and Type C APs whose revocation status a read "
        "should carry); AIDs unique.")] = ()

    def __post_init__(self) -> None:
        for i, ap in enumerate(self.aps):
            if any(other.aid == ap.aid for other in self.aps[:i]):
                raise ValueError(at(f"aps[{i}].aid", "the same AID is configured twice"))


class PinConfig(Section, frozen=True):
    """[pin]: the PIN guard every AP PIN goes through."""

    floor: Annotated[int, key(
        "Before any VERIFY the retry counter is read without spending a try; the VERIFY "
        "is refused when tries left <= floor. At least 1: the last try is never spent.",
        ge=1, le=15)] = 1


class RevocationConfig(Section, frozen=True):
    """[revocation]: the pulled revocation feeds (needs [loading])."""

    interval_s: Annotated[float, _seconds(
        "Pull the feed of every organisation named in [[read.aps]] at start when due, "
        "then every this many seconds (and on demand: SyncRevocation).",
        30 * 86400.0)] = 86400.0
    max_age_s: Annotated[float, _seconds(
        "A feed not confirmed current for longer than this (or never pulled) is stale.",
        365 * 86400.0)] = 172800.0
    stale_policy: Annotated[StalePolicy, key(
        "allow_with_warning: a read returns the ID with feed_stale = true and a warning; "
        "deny: the read is refused before the card is touched "
        "(REVOCATION_FEED_STALE).")] = "allow_with_warning"


class OperatorsConfig(Section, frozen=True):
    """[operators]: the roster, the fingerprint service, sessions and scan timeouts."""

    roster: Annotated[Path, key("The roster database (operators, rights, approvals).",
                                shown="<daemon.state_dir>/roster.db", restart=True)] = DERIVED
    biometric: Annotated[Biometric, key(
        "Fingerprint service: fprintd (over D-Bus) or none (fingerprint login refused).",
        restart=True)] = "fprintd"
    bus_address: Annotated[str, key(
        "D-Bus address of fprintd's bus; empty: $DBUS_SYSTEM_BUS_ADDRESS, else the system "
        "bus.", restart=True)] = ""
    idle_timeout_s: Annotated[float, _seconds(
        "An operator session ends after this long unused.", 86400.0)] = 300.0
    absolute_timeout_s: Annotated[float, _seconds(
        "… and at the latest this long after the login.", 7 * 86400.0)] = 28800.0
    verify_timeout_s: Annotated[float, _seconds(
        "Seconds to wait for a finger at login.", 600.0)] = 30.0
    enroll_timeout_s: Annotated[float, _seconds(
        "Seconds for a whole enrolment.", 1800.0)] = 120.0
    organisations: Annotated[Organisations, key(
        "The organisations working on this terminal: id = \"display name\" (added to the "
        "roster at start).", example='{ org-a = "Organisation A" }')] = Organisations()

    def __post_init__(self) -> None:
        if self.absolute_timeout_s < self.idle_timeout_s:
            raise ValueError(at("absolute_timeout_s", "must be at least idle_timeout_s"))


class Config(Section, frozen=True, eq=False):
    """The whole configuration (`source`: the file it came from, None for the defaults)."""

    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    sockets: SocketsConfig = msgspec.field(default_factory=SocketsConfig)
    pcsc: PcscConfig = msgspec.field(default_factory=PcscConfig)
    card: CardConfig = msgspec.field(default_factory=CardConfig)
    tap: TapConfig = msgspec.field(default_factory=TapConfig)
    diagnose: DiagnoseConfig = msgspec.field(default_factory=DiagnoseConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    loading: LoadingConfig = msgspec.field(default_factory=LoadingConfig)
    presets: PresetsConfig = msgspec.field(default_factory=PresetsConfig)
    read: ReadConfig = msgspec.field(default_factory=ReadConfig)
    user_id_formats: Annotated[UserIdFormats, key(
        "An organisation's own user ID format, opt-in: organisation = regular expression "
        "that the whole user ID (its text: 13 characters, or 0x + 26 hex digits) must "
        "match. Reads of that organisation's APs ([[read.aps]]) refuse other IDs "
        "(USER_ID_FORMAT); without an entry a user ID is taken as the card holds it.",
        example='{ org-a = "^[0-9A-Z]{13}$" }')] = UserIdFormats()
    pin: PinConfig = msgspec.field(default_factory=PinConfig)
    revocation: RevocationConfig = msgspec.field(default_factory=RevocationConfig)
    operators: OperatorsConfig = msgspec.field(default_factory=OperatorsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    source: Path | None = None

    @classmethod
    def default(cls) -> Config:
        """The configuration of an empty file."""
        return cls()

    def __post_init__(self) -> None:
        state = self.daemon.state_dir
        try:
            sockets = self.sockets.resolved(self.daemon.runtime_dir)
        except ValueError as exc:
            raise ValueError(within("sockets", str(exc))) from None
        msgspec.structs.force_setattr(self, "sockets", sockets)
        if self.audit.path == DERIVED:
            msgspec.structs.force_setattr(
                self, "audit", msgspec.structs.replace(self.audit, path=state / "audit.db"))
        if self.audit.export_dir == DERIVED:
            msgspec.structs.force_setattr(self, "audit", msgspec.structs.replace(
                self.audit, export_dir=state / "audit-export"))
        if self.operators.roster == DERIVED:
            msgspec.structs.force_setattr(self, "operators", msgspec.structs.replace(
                self.operators, roster=state / "roster.db"))

    def __eq__(self, other: object) -> bool:
        """Equal in every key (where each came from does not count)."""
        return isinstance(other, Config) and all(
            getattr(self, f) == getattr(other, f) for f in self.__struct_fields__
            if f != "source")

    __hash__ = None  # type: ignore[assignment]

    @property
    def read_aps(self) -> tuple[ReadApConfig, ...]:
        """The [[read.aps]] entries."""
        return self.read.aps

    def user_id_rule(self, aid: bytes) -> UserIdRule:
        """How user IDs of the AP `aid` are accepted: its [[read.aps]] charset and its
        organisation's [user_id_formats] entry; the default rule for an AP not listed."""
        ap = next((a for a in self.read.aps if a.aid == aid), None)
        if ap is None:
            return DEFAULT_RULE
        pattern = self.user_id_formats.pattern(ap.organisation)
        return UserIdRule(ap.user_id_charset,
                          re.compile(pattern) if pattern is not None else None,
                          ap.organisation)

    def user_id_rules(self) -> dict[bytes, UserIdRule]:
        """The rule of every AP named in [tap] or [[read.aps]]."""
        aids = [*self.tap.type_c_aids, *(ap.aid for ap in self.read.aps)]
        return {bytes(aid): self.user_id_rule(aid) for aid in aids}

    def inline_secret_problem(self) -> str | None:
        """Why the file's inline secrets are not safe there (its mode), or None."""
        if self.source is None or not any(ap.inline_secret for ap in self.read.aps):
            return None
        try:
            mode = self.source.stat().st_mode
        except OSError:
            return None
        if mode & 0o077:
            return (f"holds an inline access key or PIN but {self.source} has mode "
                    f"{stat.S_IMODE(mode):04o}; chmod 600 it or use *_file keys")
        return None
