"""`cardap-loadsvc`: run the reference loading service, write dev keys, print load reports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from cardap_sim.loadsvc.billing import Billing
from cardap_sim.loadsvc.catalogue import dev_catalogue, load_catalogue
from cardap_sim.loadsvc.checkpoints import CheckpointStore
from cardap_sim.loadsvc.hours import (
    FAKE_NOW_ENV,
    ServiceHours,
    clock_from,
    parse_closed,
    parse_hours,
    parse_maintenance,
)
from cardap_sim.loadsvc.issuer import Issuer
from cardap_sim.loadsvc.keystore import FileKeyStore, KeyFileError, write_dev_key_file
from cardap_sim.loadsvc.revocation import dev_feeds, load_feeds
from cardap_sim.loadsvc.server import LoadingServer, TlsFiles
from cardap_sim.loadsvc.session import ServiceCore

log = logging.getLogger("cardap_sim.loadsvc")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line with the structured `extra` fields (never keys or APDUs)."""

    _skip = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as JSON."""
        out = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        out.update({k: v for k, v in record.__dict__.items() if k not in self._skip})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="cardap-loadsvc", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the service (mutual TLS gRPC)")
    s.add_argument("--listen", default="127.0.0.1:7443", help="host:port")
    s.add_argument("--cert", type=Path, required=True, help="service certificate (PEM)")
    s.add_argument("--key", type=Path, required=True, help="service private key (PEM, 0600)")
    s.add_argument("--client-ca", type=Path, required=True, help="CA of terminal certificates")
    s.add_argument("--keys", type=Path, required=True, help="card key file (JSON, mode 0600)")
    s.add_argument("--catalogue", type=Path, help="catalogue (.toml/.json); default: dev")
    s.add_argument("--revocations", type=Path, help="revocation feed (.json); default: dev")
    s.add_argument("--data-dir", type=Path, required=True, help="SQLite databases go here")
    s.add_argument("--fake-now", default=os.environ.get(FAKE_NOW_ENV),
                   help=f"start the clock at this ISO time (tests; env {FAKE_NOW_ENV})")
    s.add_argument("--hours", default="08:00-22:00", help="daily service hours (JST)")
    s.add_argument("--closed", action="append", default=None, metavar="MM-DD:MM-DD",
                   help="closed days of every year (repeatable; default 12-29:01-03)")
    s.add_argument("--maintenance", action="append", default=[],
                   metavar="START/END or START/END/DESCRIPTION",
                   help="a planned maintenance window, ISO times with offsets (repeatable)")
    s.add_argument("--announce-business-days", type=int, default=10,
                   help="maintenance is announced this many business days ahead")
    s.add_argument("--log-level", default="INFO")
    s.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    k = sub.add_parser("dev-keys", help="write the dev card key file (mode 0600)")
    k.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report", help="yearly load count of an organisation")
    r.add_argument("--data-dir", type=Path, required=True)
    r.add_argument("--organisation", required=True)
    r.add_argument("--year", type=int, required=True)
    c = sub.add_parser("checkpoints", help="the audit checkpoints kept for a terminal "
                       "(JSON lines, for cardapctl audit verify --checkpoints FILE)")
    c.add_argument("--data-dir", type=Path, required=True)
    c.add_argument("--terminal", required=True, help="terminal id (its certificate's CN)")
    return p


async def _serve(args: argparse.Namespace) -> int:
    """Build the core and serve until SIGTERM/SIGINT."""
    try:
        keys = FileKeyStore(args.keys)
    except KeyFileError as exc:
        print(f"cardap-loadsvc: {exc}", file=sys.stderr)
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        open_hour, close_hour = parse_hours(args.hours)
        hours = ServiceHours(
            open_hour, close_hour,
            tuple(parse_closed(c) for c in args.closed) if args.closed is not None
            else ServiceHours().closed,
            tuple(parse_maintenance(m) for m in args.maintenance),
            args.announce_business_days)
    except ValueError as exc:
        print(f"cardap-loadsvc: {exc}", file=sys.stderr)
        return 2
    core = ServiceCore(
        catalogue=load_catalogue(args.catalogue) if args.catalogue else dev_catalogue(),
        keys=keys, issuer=Issuer(args.data_dir / "user_ids.sqlite3"),
        billing=Billing(args.data_dir / "loads.sqlite3"), clock=clock_from(args.fake_now),
        hours=hours)
    feeds = load_feeds(args.revocations) if args.revocations else dev_feeds()
    tls = TlsFiles(args.cert.read_bytes(), args.key.read_bytes(), args.client_ca.read_bytes())
    checkpoints = CheckpointStore(args.data_dir / "checkpoints.sqlite3")
    server = LoadingServer(core, feeds, tls, args.listen, checkpoints)
    await server.start()
    print(f"READY port={server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    core.issuer.close()
    core.billing.close()
    checkpoints.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cardap-loadsvc` console script."""
    args = _parser().parse_args(argv)
    if args.command == "dev-keys":
        try:
            write_dev_key_file(args.out)
        except FileExistsError:
            print(f"cardap-loadsvc: {args.out} exists; not overwritten", file=sys.stderr)
            return 1
        print(f"wrote TEST-ONLY card keys to {args.out} (mode 0600)")
        return 0
    if args.command == "report":
        billing = Billing(args.data_dir / "loads.sqlite3")
        rep = billing.report(args.organisation, args.year)
        print(json.dumps({"organisation": rep.organisation, "year": rep.year,
                          "loads": rep.loads, "yen": rep.yen, "per_ap": rep.per_ap}))
        return 0
    if args.command == "checkpoints":
        store = CheckpointStore(args.data_dir / "checkpoints.sqlite3")
        try:
            for kept in store.for_terminal(args.terminal):
                print(kept.as_json())
        finally:
            store.close()
        return 0
    handler = logging.StreamHandler()
    if args.json_logs:
        handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
