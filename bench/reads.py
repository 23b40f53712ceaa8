"""`python -m bench.reads --out docs/benchmarks.md [--n 2000] [--quick]`: secure user ID reads.

One run, one private stack (`Stack(loading=True, test_sessions=True)`: pcscd + vpcd + the
virtual card + the reference loading service + cardapd through the TEST-ONLY entry point).
The demo card gets the dev catalogue's org-a Type C, Type A and Type D APs through `LoadAP`
(operator session `test:org-a:op-1`); their access keys and system PINs come from the
loading service's own key file (`FileKeyStore.ap_secrets` by the catalogue's
`access_key_ref`). Then, interleaved in batches whose order rotates every round:

* the empty-RPC floor: grpc.health.v1 `Check` on the daemon's gate socket;
* per type (C, A, D), `ReadUserID` through the daemon (C with `fresh=True`; A and D with
  the AP's type and AID, the PIN from `[[read.aps]]`), when this daemon supports it;
* per type, the same APDU sequence sent directly: `cardapd.myna.typec.TypeCSession`,
  `typea.TypeASession`, `typed.TypeDSession` (PIN guard included) over a small pyscard
  `CardConnection` (low-level `SCardTransmit`, SHARED connection held open, the stack's
  `PCSCLITE_CSOCK_NAME`) in this process: no gRPC, no daemon.

The Markdown goes between the `bench.reads` markers of the --out file (appended when absent;
other sections are left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.interleave import measure_interleaved
from bench.run import (
    CARD_INSERTED,
    EVENT_TIMEOUT_S,
    READER,
    DaemonWatcher,
    machine,
    wait_for_event,
)
from bench.sections import write_section
from bench.stats import Summary
from cardap_sim.stack import Stack

SESSION: tuple[tuple[str, str | bytes], ...] = (("cardap-session", "test:org-a:op-1"),)
ORGANISATION = "org-a"
AP_IDS = {"C": "org-a-staff-c", "A": "org-a-cert-a", "D": "org-a-records-d"}
KINDS = ("C", "A", "D")
PIN_FLOOR = 1
INFO_LEN = 118


@dataclass
class Options:
    """What to run."""

    out: Path | None
    n: int
    batch: int
    warmup: int
    quick: bool
    keep: bool


@dataclass(frozen=True)
class ReadAp:
    """One loaded AP: type, AID and (A/D) its access key and system PIN."""

    kind: str
    ap_id: str
    aid: bytes
    access_key: bytes = b""
    pin: bytes = b""


@dataclass
class Results:
    """Raw samples (ms) and facts of one run."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    apdus: dict[str, int] = field(default_factory=dict)
    same_apdus: dict[str, bool] = field(default_factory=dict)
    daemon_kinds: tuple[str, ...] = ()
    daemon_note: str = ""
    user_ids: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    seconds: float = 0.0


def parse_args(argv: list[str] | None) -> Options:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench.reads",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--out", type=Path, help="Markdown file whose 'Secure reads' section to "
                                            "replace (or append)")
    p.add_argument("--n", type=int, default=None,
                   help="timed calls per measurement (default 2000; 40 with --quick)")
    p.add_argument("--batch", type=int, default=50, help="calls per interleaved batch")
    p.add_argument("--quick", action="store_true", help="small smoke run (< 1 minute)")
    p.add_argument("--keep", action="store_true", help="keep the stack directory (logs)")
    a = p.parse_args(argv)
    n = a.n if a.n is not None else (40 if a.quick else 2000)
    if n < 1 or a.batch < 1:
        p.error("--n and --batch must be positive")
    return Options(out=a.out, n=n, batch=min(a.batch, n), warmup=5 if a.quick else 30,
                   quick=a.quick, keep=a.keep)


# ---------------------------------------------------------------------------- setup


def bench_catalogue_toml() -> str:
    """The dev catalogue's org-a C/A/D APs (same ids, AIDs, key references, image sizes), the
    A and D ones with two full 118-byte info fields (the card model's 255-byte layout), so
    the measured reads carry the largest records."""
    from cardap_sim.loadsvc.catalogue import dev_catalogue

    dev = dev_catalogue().aps
    parts = []
    for kind, ap_id in AP_IDS.items():
        ap = dev[ap_id]
        infos = ap.info if kind == "C" else (
            ap.info[0].ljust(INFO_LEN, b"."), ap.info[1].ljust(INFO_LEN, b"."))
        sizes = ", ".join(f"{prof} = {size}" for prof, size in ap.image_bytes.items())
        part = (f'[[ap]]\nid = "{ap_id}"\ntype = "{kind}"\n'
                f'instance_aid = "{ap.instance_aid.hex().upper()}"\n'
                f'load_file_aid = "{ap.load_file_aid.hex().upper()}"\narea = "{ap.area}"\n'
                f'info = [{", ".join(repr(i.hex().upper()) for i in infos)}]\n'
                f"image_bytes = {{ {sizes} }}\n")
        if ap.access_key_ref:
            part += f'access_key_ref = "{ap.access_key_ref}"\n'
        parts.append(part.replace("'", '"'))
    ids = ", ".join(f'"{i}"' for i in AP_IDS.values())
    parts.append(f'[[organisation]]\nid = "{ORGANISATION}"\nname = "Org A"\n'
                 f"may_load = [{ids}]\n")
    return "\n".join(parts)


def catalogue_aps(catalogue_file: Path, key_file: Path) -> dict[str, ReadAp]:
    """The C/A/D APs of the bench catalogue with their secrets from the service's key file."""
    from cardap_sim.loadsvc.catalogue import load_catalogue
    from cardap_sim.loadsvc.keystore import FileKeyStore

    catalogue = load_catalogue(catalogue_file).aps
    store = FileKeyStore(key_file)
    out: dict[str, ReadAp] = {}
    for kind, ap_id in AP_IDS.items():
        ap = catalogue[ap_id]
        if ap.access_key_ref:
            secrets = store.ap_secrets(ap.access_key_ref)
            out[kind] = ReadAp(kind, ap_id, ap.instance_aid, secrets.access_key,
                               secrets.pin.encode("ascii"))
        else:
            out[kind] = ReadAp(kind, ap_id, ap.instance_aid)
    return out


def daemon_reads_secure() -> bool:
    """Whether this daemon's configuration knows `[[read.aps]]` (issue 6 reads wired)."""
    try:
        from cardapd import config
    except ImportError:
        return False
    return "read_aps" in getattr(config.Config, "__dataclass_fields__", {})


def read_aps_config(aps: dict[str, ReadAp]) -> str:
    """`[[read.aps]]` for the A and D APs (inline secrets: the config file is made 0600)."""
    text = ""
    for kind in ("A", "D"):
        ap = aps[kind]
        text += (f'[[read.aps]]\naid = "{ap.aid.hex().upper()}"\ntype = "{kind}"\n'
                 f'organisation = "{ORGANISATION}"\naccess_key_hex = "{ap.access_key.hex()}"\n'
                 f'pin = "system"\nsystem_pin = "{ap.pin.decode("ascii")}"\n\n')
    return text


def load_aps(stack: Any, aps: dict[str, ReadAp]) -> None:
    """LoadAP every AP on the kiosk socket with the test operator session."""
    import grpc

    from cardap.v1 import terminal_pb2, terminal_pb2_grpc

    with grpc.insecure_channel(f"unix://{stack.socket('kiosk')}") as ch:
        stub = terminal_pb2_grpc.TerminalStub(ch)
        for ap in aps.values():
            events = list(stub.LoadAP(terminal_pb2.LoadAPRequest(ap_id=ap.ap_id),
                                      metadata=SESSION, timeout=60))
            results = [e.result for e in events if e.HasField("result")]
            if not results or not all(r.ok for r in results):
                raise RuntimeError(f"LoadAP {ap.ap_id} failed: {results}")


class ReadsStack(Stack):
    """The stack with its loading service on the bench catalogue (`--catalogue`)."""

    def __init__(self, workdir: Path, catalogue: Path) -> None:
        super().__init__(workdir, log_level="warning", loading=True, test_sessions=True)
        self.catalogue = catalogue

    def start_loadsvc(self, port: int = 0, fake_now: str | None = None) -> int:
        """As Stack.start_loadsvc, with `--catalogue` added to the service's command line."""
        real_popen = subprocess.Popen

        def popen(cmd: list[str], *args: Any, **kw: Any) -> Any:
            if "cardap_sim.loadsvc" in cmd:
                cmd = [*cmd, "--catalogue", str(self.catalogue)]
            return real_popen(cmd, *args, **kw)

        subprocess.Popen = popen  # type: ignore[assignment,misc]
        try:
            return super().start_loadsvc(port, fake_now)
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]


def insert_and_wait(stack: Any, card: Path) -> None:
    """Insert the card into slot 0 and wait for the daemon's CARD_INSERTED."""
    watcher = DaemonWatcher(stack.socket("gate"))
    try:
        watcher.start()
        stack.control.insert(0, card)
        wait_for_event(watcher.events, lambda e: e[1] == CARD_INSERTED and e[2] == READER,
                       "the daemon's CARD_INSERTED")
    finally:
        watcher.close()


# ---------------------------------------------------------------------------- direct pyscard


class PyscardConnection:
    """A `cardlib.connection.CardConnection` over low-level `smartcard.scard`.

    SHARED, held open like the daemon's own; `PCSCLITE_CSOCK_NAME` must already point at
    the stack's pcscd when the first context is made.
    """

    def __init__(self, reader: str) -> None:
        from smartcard import scard

        self._scard = scard
        hresult, self._ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise RuntimeError(f"SCardEstablishContext: {scard.SCardGetErrorMessage(hresult)}")
        hresult, self._card, self._proto = scard.SCardConnect(
            self._ctx, reader, scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if hresult != scard.SCARD_S_SUCCESS:
            scard.SCardReleaseContext(self._ctx)
            raise RuntimeError(f"SCardConnect: {scard.SCardGetErrorMessage(hresult)}")
        hresult, _reader, _state, _proto, atr = scard.SCardStatus(self._card)
        self._atr = bytes(atr) if hresult == scard.SCARD_S_SUCCESS else b""
        self._transmit = scard.SCardTransmit

    @property
    def atr(self) -> bytes:
        """The ATR pcscd reported."""
        return self._atr

    def transmit(self, apdu: bytes) -> bytes:
        """One SCardTransmit; a PC/SC error is a RuntimeError (the bench stops)."""
        hresult, response = self._transmit(self._card, self._proto, list(apdu))
        if hresult != self._scard.SCARD_S_SUCCESS:
            raise RuntimeError(f"SCardTransmit: {self._scard.SCardGetErrorMessage(hresult)}")
        return bytes(response)

    def close(self) -> None:
        """Disconnect (leave the card) and release the context."""
        self._scard.SCardDisconnect(self._card, self._scard.SCARD_LEAVE_CARD)
        self._scard.SCardReleaseContext(self._ctx)


@contextlib.contextmanager
def direct_readers(aps: dict[str, ReadAp]) -> Iterator[dict[str, Callable[[], str]]]:
    """Per type, a function running the daemon's APDU sequence directly; returns the user ID."""
    from cardapd.myna.pin_guard import PinGuard
    from cardapd.myna.typea import TypeASession
    from cardapd.myna.typec import TypeCSession
    from cardapd.myna.typed import TypeDSession
    from cardlib.protocol import ApduProtocol

    conn = PyscardConnection(READER)
    try:
        proto = ApduProtocol(conn)
        guard = PinGuard(PIN_FLOOR)
        c, a, d = aps["C"], aps["A"], aps["D"]
        type_c, type_a, type_d = TypeCSession(proto), TypeASession(proto), TypeDSession(proto)

        def read_c() -> str:
            return type_c.read(c.aid).user_id

        def read_a() -> str:
            return type_a.read(a.aid, a.access_key, a.pin, guard).user_id

        def read_d() -> str:
            return type_d.read(d.aid, d.access_key, d.pin, guard).user_id

        yield {"C": read_c, "A": read_a, "D": read_d}
    finally:
        conn.close()


# ---------------------------------------------------------------------------- measuring


def daemon_readers(client: Any, aps: dict[str, ReadAp],
                   kinds: tuple[str, ...]) -> dict[str, Callable[[], str]]:
    """Per type, a ReadUserID call through the daemon; returns the user ID."""
    from cardap.v1 import cards_pb2

    codes = {"C": cards_pb2.AP_TYPE_C, "A": cards_pb2.AP_TYPE_A, "D": cards_pb2.AP_TYPE_D}
    out: dict[str, Callable[[], str]] = {}
    for kind in kinds:
        aid, code = aps[kind].aid.hex().upper(), codes[kind]

        def read(aid: str = aid, code: int = code, kind: str = kind) -> str:
            response = client.read_user_id(READER, aid, fresh=kind == "C", ap_type=code)
            return str(response.user_id)
        out[kind] = read
    return out


def probe_daemon(readers: dict[str, Callable[[], str]], expect: dict[str, str],
                 results: Results) -> dict[str, Callable[[], str]]:
    """Keep the daemon reads that work now and return the expected user ID; note the rest."""
    from cardap.client import CardapClientError

    usable: dict[str, Callable[[], str]] = {}
    notes: list[str] = []
    for kind, fn in readers.items():
        try:
            got = fn()
        except CardapClientError as err:
            notes.append(f"Type {kind}: {err.code.name} {err.reason}")
            continue
        if got != expect[kind]:
            raise RuntimeError(f"the daemon's Type {kind} read returned another user ID")
        usable[kind] = fn
    results.daemon_kinds = tuple(usable)
    if notes:
        results.daemon_note += " Daemon reads refused at start: " + "; ".join(notes) + "."
    return usable


def apdu_headers(stack: Any, fn: Callable[[], object]) -> list[str]:
    """Headers (CLA INS P1 P2) of the APDUs the card received during one call (sim log)."""
    stack.control.clear_apdus(0)
    fn()
    return [h.hex().upper() for h in stack.control.apdus(0)]


def measure(stack: Any, aps: dict[str, ReadAp], secure_config: bool, opts: Options,
            results: Results) -> None:
    """Correctness first, then interleaved timed batches of every measurement."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cardap.client import CardapClient

    with CardapClient(stack.socket("gate"), timeout=EVENT_TIMEOUT_S) as client, \
            direct_readers(aps) as direct:
        health = health_pb2_grpc.HealthStub(client.channel)
        check_req = health_pb2.HealthCheckRequest(service="")
        if health.Check(check_req).status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError("the daemon's health is not SERVING")

        def check() -> str:
            health.Check(check_req, timeout=EVENT_TIMEOUT_S)
            return ""

        expect = {kind: fn() for kind, fn in direct.items()}
        results.user_ids = dict(expect)
        wanted = KINDS if secure_config else ("C",)
        if not secure_config:
            results.daemon_note += (" This daemon has no `[[read.aps]]` configuration yet: "
                                    "Types A and D were measured direct only.")
        daemon = probe_daemon(daemon_readers(client, aps, wanted), expect, results)
        for kind, fn in direct.items():
            headers = apdu_headers(stack, fn)
            results.apdus[kind] = len(headers)
            if kind in daemon:
                same = apdu_headers(stack, daemon[kind]) == headers
                results.same_apdus[kind] = same

        kinds: list[tuple[str, Callable[[], str]]] = [("floor", check)]
        for kind in KINDS:
            if kind in daemon:
                kinds.append((f"daemon_{kind}", daemon[kind]))
            kinds.append((f"direct_{kind}", direct[kind]))
        rounds = measure_interleaved(kinds, results.samples, results.errors, n=opts.n,
                                     batch=opts.batch, warmup=opts.warmup,
                                     tolerated=frozenset())
        results.rounds = rounds


# ---------------------------------------------------------------------------- report


LABELS = {
    "floor": "Empty-RPC floor: grpc.health.v1 Check (gate socket)",
    "daemon_C": "ReadUserID Type C (fresh=True)",
    "direct_C": "Direct pyscard Type C (SELECT, READ BINARY)",
    "daemon_A": "ReadUserID Type A (system PIN)",
    "direct_A": "Direct pyscard Type A (auth, guarded VERIFY, 3 × READ RECORD)",
    "daemon_D": "ReadUserID Type D (system PIN, secure messaging)",
    "direct_D": "Direct pyscard Type D (auth, SM guarded VERIFY, SM READ BINARY)",
}


def report(opts: Options, res: Results, command: str, started: dt.datetime) -> str:
    """The Markdown section (between the markers)."""
    s = {k: Summary.of(k, v) for k, v in res.samples.items()}
    rows = ["| Measurement | APDUs | n | p50 ms | p90 ms | p99 ms | min ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in ("floor", "daemon_C", "direct_C", "daemon_A", "direct_A", "daemon_D",
                "direct_D"):
        if key not in s:
            continue
        x = s[key]
        apdus = str(res.apdus.get(key[-1], "")) if key != "floor" else "0"
        rows.append(f"| {LABELS[key]} | {apdus} | {x.n} | {x.p50:.3f} | {x.p90:.3f} | "
                    f"{x.p99:.3f} | {x.min:.3f} | {x.max:.3f} |")
    floor = s["floor"]
    ratio_rows = ["| Ratio / difference (same run) | p50 | p99 |", "|---|---:|---:|"]
    for kind in KINDS:
        direct = s[f"direct_{kind}"]
        if f"daemon_{kind}" in s:
            d = s[f"daemon_{kind}"]
            ratio_rows += [
                f"| Type {kind}: daemon / direct | {d.p50 / direct.p50:.2f}× | "
                f"{d.p99 / direct.p99:.2f}× |",
                f"| Type {kind}: daemon − (floor + direct) | "
                f"{d.p50 - floor.p50 - direct.p50:+.3f} ms | "
                f"{d.p99 - floor.p99 - direct.p99:+.3f} ms |",
                f"| Type {kind}: daemon / floor | {d.p50 / floor.p50:.1f}× | "
                f"{d.p99 / floor.p99:.1f}× |"]
        if kind != "C":
            c = s["direct_C"]
            ratio_rows.append(f"| direct Type {kind} / direct Type C | "
                              f"{direct.p50 / c.p50:.2f}× | {direct.p99 / c.p99:.2f}× |")
    same = "; ".join(f"Type {k} {'identical' if v else '**different**'}"
                     for k, v in res.same_apdus.items()) or "not compared"
    per_apdu = "; ".join(
        f"Type {k} {s[f'direct_{k}'].p50 / res.apdus[k]:.3f} ms"
        for k in KINDS if res.apdus.get(k))
    failed = {k: v for k, v in res.errors.items() if v}
    failures = ("Failed calls (counted, not timed; replaced by further calls): " + "; ".join(
        f"{LABELS[k]}: " + ", ".join(f"{n} × {reason}" for reason, n in v.items())
        for k, v in failed.items()) + ".") if failed else "Failed calls: none."
    daemon_types = ", ".join(res.daemon_kinds) or "none"
    run = (f"{opts.n} timed calls per measurement in {res.rounds} interleaved rounds of "
           f"{opts.batch} (order rotated each round; {opts.warmup} warm-up calls each first); "
           f"whole run {res.seconds:.1f} s.")
    lines = [
        "## Secure reads (issue 6): Type C, A and D",
        "",
        "Produced by `bench/reads.py` (the command below); one run on one private stack "
        "(pcscd, vpcd, the virtual card, the reference loading service, cardapd through "
        "the TEST-ONLY `cardapd_testing.main`), client and server on this machine.",
        "",
        f"- Command: `{command}`",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Machine: {machine()}",
        f"- Run: {run}",
        f"- Daemon reads measured for: {daemon_types}.{res.daemon_note}",
        "",
        "### Results",
        "",
        *rows,
        "",
        failures,
        "",
        "### Ratios",
        "",
        *ratio_rows,
        "",
        f"Direct cost per APDU (p50 / APDUs): {per_apdu}.",
        "",
        f"Command headers the card received for one daemon read vs one direct read: {same}.",
        "",
        "### What is measured",
        "",
        "- **Card**: the stack's demo card (vendor-a) with `org-a-staff-c` (Type C), "
        "`org-a-cert-a` (Type A, 16-byte access key) and `org-a-records-d` (Type D) loaded "
        "through `LoadAP` (operator session `test:org-a:op-1`). The loading service runs "
        "with `--catalogue`: the dev catalogue's entries for those three (ids, AIDs, key "
        "references, image sizes), the A and D ones with two full 118-byte info fields (the "
        "card model's 255-byte records, so the reads carry the largest records). Access "
        "keys and "
        "system PINs: the loading service's key file "
        "(`FileKeyStore.ap_secrets` by the catalogue's `access_key_ref`); the daemon gets "
        "them inline in `[[read.aps]]` (config file 0600).",
        "- **Floor**: `grpc.health.v1.Health/Check` on the gate socket through the same sync "
        "channel as the ReadUserID calls (`CardapClient`).",
        "- **Daemon**: `ReadUserID` on the gate socket with the AP's type and AID (Type C "
        "`fresh=True`, i.e. the card is read, not the tap cache); the daemon's PIN guard, "
        "audit row and revocation lookup are included.",
        "- **Direct pyscard**: the daemon's own session code (`TypeCSession`, `TypeASession`, "
        "`TypeDSession` with `PinGuard(floor=1)`, over `ApduProtocol`) in this process on a "
        "pyscard `CardConnection` (low-level `SCardTransmit`, SHARED connection held open, "
        "the stack's `PCSCLITE_CSOCK_NAME`): the same APDUs, no gRPC and no daemon. Type A/D "
        "crypto (AES-CBC mutual authentication, CMAC/CBC secure messaging) runs in this "
        "process as it does in the daemon.",
        "- **APDUs**: command APDUs the card received for one direct read, counted by the "
        "simulator's header log (`cardap-sim apdus`; GET RESPONSE included). Type A/D: SELECT, "
        "GET CHALLENGE, MUTUAL AUTHENTICATE, the guard's retry-counter read (VERIFY without "
        "data), VERIFY, then the reads.",
        "- Every path was checked to return the loaded AP's user ID before timing.",
    ]
    return "\n".join(lines) + "\n"




def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success."""
    opts = parse_args(argv)
    command = "python -m bench.reads " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="cardapd-bench-reads-"))
    catalogue = workdir / "catalogue.toml"
    catalogue.write_text(bench_catalogue_toml(), encoding="utf-8")
    stack = ReadsStack(workdir / "stack", catalogue)
    # pyscard in this process must talk to the stack's pcscd (read at the first context).
    os.environ["PCSCLITE_CSOCK_NAME"] = str(stack.pcscd_socket)
    results = Results()
    try:
        stack.write_certs()
        aps = catalogue_aps(catalogue, stack.certs_dir / "card-keys.json")
        secure_config = daemon_reads_secure()
        if secure_config:
            stack.extra_config = read_aps_config(aps)
        stack.write_config()
        stack.config_path.chmod(0o600)
        print(f"starting the stack in {workdir} ...", file=sys.stderr, flush=True)
        stack.start()
        insert_and_wait(stack, stack.demo_card())
        load_aps(stack, aps)
        print(f"measuring: {opts.n} calls per measurement ...", file=sys.stderr, flush=True)
        measure(stack, aps, secure_config, opts, results)
    finally:
        stack.stop()
        if opts.keep:
            print(f"stack directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results.seconds = time.monotonic() - t_start
    section = report(opts, results, command, started)
    print(section)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        write_section(opts.out, "bench.reads", section)
        print(f"wrote the Secure reads section of {opts.out} ({results.seconds:.1f} s)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
