"""`python -m bench.load --out docs/benchmarks.md [--runs N] [--quick]`: the load relay benchmark.

What runs (see the "Load" section this writes into the --out file):

* the reference loading service, unmodified (`python -m cardap_sim.loadsvc serve`, mutual
  TLS with a fresh dev CA, a bench catalogue of Type C APs with 2, 8 and 32 KiB images,
  `--fake-now` inside service hours) - the **batched** relay (a few round trips per load);
* the same service with one change, for the comparison (`python -m bench.load split-serve`):
  its `CardSession` handler cuts every batch of the unchanged session engine
  (`cardap_sim.loadsvc.session`) into one-APDU batches, sends them one at a time over the
  same mTLS stream, gathers the answers (stopping at the first unexpected status word) and
  hands the engine the same BatchResult it would have had - the **per-APDU** relay;
* the terminal side in this process: a grpc.aio client that opens `CardSession`, runs each
  batch on an in-process virtual card (vendor profile as given; the bench card's extended
  area is enlarged to 64 KiB so a 32 KiB image fits) and answers; exactly the terminal
  contract of loading.proto (stop a batch at the first unexpected SW);
* the link: netem in a network namespace when `tc netem` works; otherwise a delaying TCP
  proxy on loopback (`bench.netns.DelayProxy`, RTT/2 each way) in front of each service,
  also at RTT 0 so every mode crosses the same path.

Measured per load: wall time from opening the stream to SessionDone (channel already
connected and warmed), batches received (= round trips), APDUs, bytes of all commands sent
to the card and of the LOAD commands, against `minimum_bytes` for the card's block size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.netns import DelayProxy, netem_available
from bench.sections import write_section
from bench.stats import percentile
from cardap.v1 import loading_pb2, loading_pb2_grpc
from cardap_sim.loadsvc import cli as loadsvc_cli
from cardap_sim.loadsvc import server as loadsvc_server
from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import ApType, Catalogue, Organisation, make_ap
from cardap_sim.loadsvc.devca import write_bundle
from cardap_sim.loadsvc.hours import JST, FixedClock
from cardap_sim.loadsvc.issuer import Issuer
from cardap_sim.loadsvc.keystore import dev_keystore, write_dev_key_file
from cardap_sim.loadsvc.relay import drive
from cardap_sim.loadsvc.session import (
    Batch,
    BatchAnswer,
    CardSession,
    Reason,
    ServiceCore,
    SessionRequest,
)
from cardap_sim.vcard.card import VirtualCard
from cardap_sim.vcard.connection import InProcessConnection
from cardlib.gp.commands import load_file_data_block, minimum_bytes
from cardlib.gp.scp03 import FULL_SECURITY

ORG = "org-bench"
TERMINAL = "bench-kiosk"
FAKE_NOW = "2026-11-24T10:00:00+09:00"
SIZES = (2048, 8192, 32768)
RTTS_MS = (0, 10, 30)
BENCH_AREA = 1 << 16
INS_LOAD = 0xE8


def ap_id(size: int) -> str:
    """The bench catalogue id of the Type C AP with an image of `size` bytes."""
    return f"bench-c-{size // 1024}k"


def bench_catalogue_toml(sizes: tuple[int, ...]) -> str:
    """One Type C AP per size, same size for both vendors, all loadable by ORG."""
    parts = []
    for i, size in enumerate(sizes):
        parts.append(
            f'[[ap]]\nid = "{ap_id(size)}"\ntype = "C"\ninstance_aid = "D392F00043B1{i:04X}"\n'
            f'load_file_aid = "D392F0004CB1{i:04X}"\narea = "extended"\n'
            f'info = ["00000001", "00000002", "00000003"]\n'
            f'image_bytes = {{ vendor-a = {size}, vendor-b = {size} }}\n')
    ids = ", ".join(f'"{ap_id(s)}"' for s in sizes)
    parts.append(f'[[organisation]]\nid = "{ORG}"\nname = "Bench"\nmay_load = [{ids}]\n')
    return "\n".join(parts)


def bench_catalogue(sizes: tuple[int, ...]) -> Catalogue:
    """The same catalogue in memory (for the untimed in-process deletes)."""
    aps = {ap_id(s): make_ap(ap_id(s), ApType.C, f"D392F00043B1{i:04X}",
                             f"D392F0004CB1{i:04X}", sizes={"vendor-a": s, "vendor-b": s},
                             info=(b"\x00\x00\x00\x01", b"\x00\x00\x00\x02",
                                   b"\x00\x00\x00\x03"))
           for i, s in enumerate(sizes)}
    return Catalogue(aps, {ORG: Organisation(ORG, "Bench", frozenset(aps))})


# ------------------------------------------------------------------------ split service


class SplitServicer(loadsvc_server.LoadingServicer):
    """LoadingService whose card sessions send one APDU per round trip (the comparison)."""

    async def CardSession(self, request_iterator: AsyncIterator[loading_pb2.TerminalMessage],
                          context: Any) -> AsyncIterator[loading_pb2.ServiceMessage]:
        """As the reference handler, but each engine batch goes out one APDU at a time."""
        ident = await loadsvc_server._caller(context)
        it = request_iterator.__aiter__()
        first = await loadsvc_server._next(it)
        if first is None or first.WhichOneof("msg") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "SessionOpen first")
            return
        op = first.open
        session = CardSession(self.core, SessionRequest(
            organisation=ident.organisation, action=op.action, operator_id=op.operator_id,
            ap_id=op.ap_id, aid=op.aid, card_id=op.card_id, profile=op.profile,
            journal_id=op.journal_id, custom_user_id=op.custom_user_id,
            terminal_id=ident.terminal_id))
        step = await asyncio.to_thread(session.start)
        wire_id = 0
        while isinstance(step, Batch):
            responses: list[bytes] = []
            complete, transport = True, ""
            for apdu in step.apdus:
                wire_id += 1
                yield loadsvc_server.batch_message(
                    Batch(wire_id, (apdu,), step.phase, step.percent, step.step))
                try:
                    msg = await asyncio.wait_for(loadsvc_server._next(it),
                                                 loadsvc_server.BATCH_TIMEOUT_S)
                except TimeoutError:
                    msg = None
                if msg is None or msg.WhichOneof("msg") != "result":
                    step = session.abort(Reason.PROTOCOL_ERROR, "no BatchResult")
                    break
                responses.extend(bytes(r) for r in msg.result.responses)
                if msg.result.transport_error or not msg.result.complete:
                    complete, transport = False, msg.result.transport_error
                    break
            else:
                step = await asyncio.to_thread(session.answer, BatchAnswer(
                    step.batch_id, tuple(responses), complete, transport))
                continue
            if isinstance(step, Batch):  # inner break on an unexpected SW: report it
                step = await asyncio.to_thread(session.answer, BatchAnswer(
                    step.batch_id, tuple(responses), complete, transport))
        yield loadsvc_server.done_message(step)


def split_serve(argv: list[str]) -> int:
    """`cardap-loadsvc serve` with the one-APDU-per-round-trip servicer swapped in."""
    loadsvc_server.LoadingServicer = SplitServicer  # type: ignore[misc]
    return loadsvc_cli.main(["serve", *argv])


# ------------------------------------------------------------------------ processes


@dataclass
class Service:
    """A loading service child process and its port."""

    proc: subprocess.Popen[str]
    port: int

    def close(self) -> None:
        """Stop it (our own child, by pid)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_service(work: Path, name: str, split: bool) -> Service:
    """Start the batched (reference CLI) or split service on a free loopback port."""
    pki = work / "pki"
    args = ["--listen", "127.0.0.1:0", "--cert", str(pki / "service.pem"),
            "--key", str(pki / "service.key"), "--client-ca", str(pki / "ca.pem"),
            "--keys", str(work / "keys.json"), "--catalogue", str(work / "catalogue.toml"),
            "--data-dir", str(work / f"data-{name}"), "--fake-now", FAKE_NOW,
            "--log-level", "WARNING"]
    cmd = ([sys.executable, "-m", "bench.load", "split-serve", *args] if split
           else [sys.executable, "-m", "cardap_sim.loadsvc", "serve", *args])
    log = (work / f"{name}.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    log.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("READY port="):
            return Service(proc, int(line.strip().split("=", 1)[1]))
    svc = Service(proc, 0)
    svc.close()
    raise RuntimeError(f"{name} service did not start; see {work / (name + '.log')}")


# ------------------------------------------------------------------------ terminal


@dataclass
class LoadRun:
    """One measured load."""

    ms: float
    trips: int
    apdus: int
    bytes_all: int
    bytes_load: int
    reason: str


def bench_card(profile: str) -> tuple[VirtualCard, InProcessConnection]:
    """An in-process card with a 64 KiB extended area."""
    card = VirtualCard.create(profile=profile)
    card.state.extended_area_capacity = BENCH_AREA
    return card, InProcessConnection(card)


async def run_load(stub: Any, transmit: Callable[[bytes], bytes],
                   ap: str, profile: str) -> LoadRun:
    """One CardSession: answer each batch from the card until SessionDone."""
    trips = apdus = bytes_all = bytes_load = 0
    t0 = time.perf_counter()
    call: Any = stub.CardSession()
    await call.write(loading_pb2.TerminalMessage(open=loading_pb2.SessionOpen(
        action="load", ap_id=ap, operator_id="bench", profile=profile,
        journal_id=uuid.uuid4().hex)))
    while True:
        msg = await call.read()
        if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise RuntimeError("the service ended the stream without SessionDone")
        if msg.WhichOneof("msg") == "done":
            done = msg.done
            break
        batch = msg.batch
        trips += 1
        out: list[bytes] = []
        complete = True
        for a in batch.apdus:
            cmd = bytes(a.command)
            apdus += 1
            bytes_all += len(cmd)
            if len(cmd) > 1 and cmd[1] == INS_LOAD:
                bytes_load += len(cmd)
            resp = transmit(cmd)
            out.append(resp)
            if int.from_bytes(resp[-2:], "big") not in a.expect_sw:
                complete = False
                break
        await call.write(loading_pb2.TerminalMessage(result=loading_pb2.BatchResult(
            batch_id=batch.batch_id, responses=out, complete=complete)))
    ms = (time.perf_counter() - t0) * 1000
    await call.done_writing()
    if not done.ok:
        raise RuntimeError(f"load of {ap} failed: {done.reason} {done.message}")
    return LoadRun(ms, trips, apdus, bytes_all, bytes_load, done.reason)


def delete_in_process(core: ServiceCore, conn: InProcessConnection, ap: str) -> None:
    """Remove the AP again (untimed, without the network)."""
    done = drive(CardSession(core, SessionRequest(ORG, "delete", ap_id=ap)), conn.transmit)
    if not done.ok:
        raise RuntimeError(f"delete of {ap} failed: {done.reason}")


@contextlib.asynccontextmanager
async def channel(work: Path, port: int) -> AsyncIterator[Any]:
    """A connected, warmed mTLS channel to 127.0.0.1:port."""
    pki = work / "pki"
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{TERMINAL}.key").read_bytes(),
        certificate_chain=(pki / f"{TERMINAL}.pem").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        stub: Any = loading_pb2_grpc.LoadingServiceStub(ch)
        await stub.GetCatalogue(loading_pb2.GetCatalogueRequest(), timeout=20)
        yield stub


# ------------------------------------------------------------------------ the run


@dataclass
class Cell:
    """Samples of one (mode, rtt, size)."""

    runs: list[LoadRun] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return percentile([r.ms for r in self.runs], 50)

    @property
    def trips(self) -> int:
        return max(r.trips for r in self.runs)


@dataclass
class Results:
    """Everything the report needs."""

    link: str
    netem_note: str
    runs: int
    cells: dict[tuple[str, int, int], Cell] = field(default_factory=dict)
    bytes_rows: list[dict[str, Any]] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0


async def measure(work: Path, sizes: tuple[int, ...], rtts: tuple[int, ...], runs: int,
                  split_runs: int, res: Results) -> None:
    """All cells; services and proxies are stopped in finally blocks."""
    core = ServiceCore(bench_catalogue(sizes), dev_keystore(), Issuer(), Billing(),
                       FixedClock(dt.datetime.fromisoformat(FAKE_NOW).astimezone(JST)))
    services: dict[str, Service] = {}
    try:
        services["batched"] = start_service(work, "batched", split=False)
        services["per-apdu"] = start_service(work, "per-apdu", split=True)
        # round trips and bytes on both vendor profiles (no delay needed)
        for profile in ("vendor-a", "vendor-b"):
            card, conn = bench_card(profile)
            with DelayProxy(services["batched"].port, 0) as proxy:
                async with channel(work, proxy.port) as stub:
                    for size in sizes:
                        r = await run_load(stub, conn.transmit, ap_id(size), profile)
                        delete_in_process(core, conn, ap_id(size))
                        lf = len(load_file_data_block(b"\x00" * size))
                        minimum = minimum_bytes(lf, card.profile.max_command_data,
                                                FULL_SECURITY)
                        res.bytes_rows.append({
                            "profile": profile, "size": size, "trips": r.trips,
                            "apdus": r.apdus, "load_bytes": r.bytes_load, "min": minimum,
                            "ratio": r.bytes_load / minimum, "all_bytes": r.bytes_all})
        card, conn = bench_card("vendor-a")
        for rtt in rtts:
            for mode in ("batched", "per-apdu"):
                n = runs if mode == "batched" else split_runs
                with DelayProxy(services[mode].port, rtt) as proxy:
                    async with channel(work, proxy.port) as stub:
                        await run_load(stub, conn.transmit, ap_id(sizes[0]), "vendor-a")
                        delete_in_process(core, conn, ap_id(sizes[0]))  # warm-up
                        for size in sizes:
                            cell = res.cells.setdefault((mode, rtt, size), Cell())
                            for _ in range(n):
                                cell.runs.append(await run_load(stub, conn.transmit,
                                                                ap_id(size), "vendor-a"))
                                delete_in_process(core, conn, ap_id(size))
                            print(f"rtt={rtt:>2} ms {mode:>8} {size // 1024:>2} KiB: "
                                  f"median {cell.median_ms:8.1f} ms, {cell.trips} trips",
                                  flush=True)
    finally:
        for svc in services.values():
            svc.close()
        core.issuer.close()
        core.billing.close()


# ------------------------------------------------------------------------ report


def report(res: Results, sizes: tuple[int, ...], rtts: tuple[int, ...]) -> str:
    """The Markdown section."""
    lines = ["## Load (issue 4): the loading-service relay", "",
             f"Run {res.started}, {res.seconds:.0f} s, Python {platform.python_version()}, "
             f"{platform.machine()}; `python -m bench.load` ({res.runs} batched loads and "
             "fewer per-APDU loads per cell, medians).", "",
             f"**Link:** {res.link}", "",
             "### Load time (median ms, vendor-a, Type C AP) and round trips", "",
             "| RTT | image | batched ms | trips | per-APDU ms | trips | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for rtt in rtts:
        for size in sizes:
            b = res.cells.get(("batched", rtt, size))
            s = res.cells.get(("per-apdu", rtt, size))
            if b is None or s is None:
                continue
            lines.append(f"| {rtt} ms | {size // 1024} KiB | {b.median_ms:.1f} | {b.trips} | "
                         f"{s.median_ms:.1f} | {s.trips} | {s.median_ms / b.median_ms:.1f}× |")
    lines += ["", "### Round trips per AP and bytes sent to the card", "",
              "| profile | image | trips | APDUs | LOAD bytes | minimum | ratio | all command "
              "bytes |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in res.bytes_rows:
        lines.append(f"| {row['profile']} | {row['size'] // 1024} KiB | {row['trips']} | "
                     f"{row['apdus']} | {row['load_bytes']} | {row['min']} | "
                     f"{row['ratio']:.4f} | {row['all_bytes']} |")
    max_trips = max([r["trips"] for r in res.bytes_rows]
                    + [c.trips for (m, _, _), c in res.cells.items() if m == "batched"])
    top = max(rtts)
    speedups = [res.cells[("per-apdu", top, s)].median_ms / res.cells[("batched", top, s)].median_ms
                for s in sizes if ("per-apdu", top, s) in res.cells]
    worst_ratio = max(r["ratio"] for r in res.bytes_rows)

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines += ["", "### Targets", "",
              "| target | result | |", "|---|---|---|",
              f"| ≤ 4 round trips per AP, any image size | max {max_trips} | "
              f"{verdict(max_trips <= 4)} |",
              f"| ≥ 5× faster than per-APDU relay at {top} ms | min "
              f"{min(speedups):.1f}× (per size: "
              + ", ".join(f"{s // 1024} KiB {x:.1f}×" for s, x in zip(sizes, speedups,
                                                                       strict=False))
              + f") | {verdict(min(speedups) >= 5)} |",
              f"| LOAD bytes ≤ 1.05 × minimum for the block size | worst {worst_ratio:.4f} | "
              f"{verdict(worst_ratio <= 1.05)} |", "",
              "### How it was measured", "",
              "* Service: the reference loading service started by its own CLI "
              "(`python -m cardap_sim.loadsvc serve`, mutual TLS, fresh dev CA, bench "
              "catalogue of Type C APs of 2/8/32 KiB, `--fake-now` in service hours).",
              "* Per-APDU comparison: the service has no such mode, so `python -m bench.load "
              "split-serve` runs the same CLI with `LoadingServicer.CardSession` replaced by "
              "one that cuts each batch of the unchanged session engine into one-APDU "
              "batches sent one at a time on the same stream and feeds the engine the "
              "gathered answers; the engine, TLS, gRPC and link are identical.",
              "* Terminal: a grpc.aio client in the benchmark process (the loading.proto "
              "terminal contract: run a batch, stop at the first unexpected SW) against an "
              "in-process virtual card (its extended area enlarged to 64 KiB so 32 KiB fits); "
              "cardapd, pcscd and vpcd are *not* in the timed path, so the numbers isolate "
              "the relay and the link. Time = SessionOpen to SessionDone on a warmed channel; "
              "the AP is deleted in-process (untimed) between loads.",
              f"* Link: {res.netem_note}",
              "* Bytes: every command APDU the terminal sent to the card, counted at the "
              "terminal; LOAD bytes against `cardlib.gp.commands.minimum_bytes` for the load "
              "file (`C4 len image`), the profile's max command data and security level 33."]
    return "\n".join(lines) + "\n"




@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    """A scratch directory (removed at the end unless --keep)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="bench-load-") as d:
        yield Path(d)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["split-serve"]:
        return split_serve(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    p.add_argument("--out", type=Path, help="Markdown file to add/replace the Load section in")
    p.add_argument("--runs", type=int, default=7, help="batched loads per cell")
    p.add_argument("--split-runs", type=int, default=3, help="per-APDU loads per cell")
    p.add_argument("--quick", action="store_true", help="2 runs, for a smoke test")
    p.add_argument("--keep", type=Path, help="keep the work directory here")
    a = p.parse_args(argv)
    runs, split_runs = (2, 1) if a.quick else (a.runs, a.split_runs)
    ok, why = netem_available()
    if ok:
        # netem works here: still measured through the proxy (the service would have to run
        # in the namespace with its certificate's SAN on the veth address); say so.
        link = "delaying TCP proxy on loopback (netem available but not used by this run)"
        note = f"netns/netem probe: {why}; the proxy holds each chunk RTT/2 per direction."
    else:
        link = (f"delaying TCP proxy on loopback, RTT/2 added per direction (netem unavailable "
                f"here: {why})")
        note = (f"netns/netem probe: {why}. Fallback: `bench.netns.DelayProxy`, an asyncio "
                "TCP proxy on 127.0.0.1 that delivers each chunk RTT/2 after it arrived, "
                "in order, TCP_NODELAY on both legs, one proxy per service and RTT (also at "
                "0 ms, so every cell crosses the same path).")
    res = Results(link=link, netem_note=note, runs=runs,
                  started=dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    t0 = time.monotonic()
    with workdir(a.keep) as work:
        write_bundle(work / "pki", [(TERMINAL, ORG)])
        write_dev_key_file(work / "keys.json")
        (work / "catalogue.toml").write_text(bench_catalogue_toml(SIZES))
        asyncio.run(measure(work, SIZES, RTTS_MS, runs, split_runs, res))
    res.seconds = time.monotonic() - t0
    section = report(res, SIZES, RTTS_MS)
    print(section)
    if a.out is not None:
        write_section(a.out, "bench.load", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
