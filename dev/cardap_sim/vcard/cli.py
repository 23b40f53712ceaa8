"""`cardap-sim`: run the virtual-card simulator, create card files, drive the control socket,
and put a finger on the virtual fingerprint sensor.

The client commands talk to `cardap-sim serve --control PATH`; PATH defaults to
$CARDAP_SIM_CONTROL (what `make run` prints). `finger` writes to libfprint's
virtual_image sensor socket, $FP_VIRTUAL_IMAGE by default (also printed by `make run`).
Output is for people by default; `--json` prints one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from cardap_sim.biometric import PRINT_NAMES

from .card import VirtualCard
from .control import SimControl, SimControlError
from .errors import VcardError
from .typec import TypeCSpec

DEFAULT_VPCD_PORT = 35963
CONTROL_ENV = "CARDAP_SIM_CONTROL"
SENSOR_WAIT_S = 2.0
SENSOR_ENV = "FP_VIRTUAL_IMAGE"  # libfprint's own variable for the virtual_image socket


def parse_type_c(text: str) -> TypeCSpec:
    """`AID:USERID[:INFO1:INFO2:INFO3]` (hex AID and infos) -> TypeCSpec."""
    parts = text.split(":")
    if len(parts) not in (2, 5):
        raise argparse.ArgumentTypeError("expected AID:USERID[:INFO1HEX:INFO2HEX:INFO3HEX]")
    try:
        aid = bytes.fromhex(parts[0])
        if len(parts) == 5:
            infos = (bytes.fromhex(parts[2]), bytes.fromhex(parts[3]), bytes.fromhex(parts[4]))
            return TypeCSpec(aid, parts[1], infos)
        return TypeCSpec(aid, parts[1])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _hex_int(text: str) -> int:
    """A hexadecimal integer argument."""
    try:
        return int(text, 16)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text for people")
    p = argparse.ArgumentParser(prog="cardap-sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v info, -vv debug (APDUs, with secrets redacted)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the simulator (vpcd slots + control socket)")
    s.add_argument("--vpcd-host", default="127.0.0.1", help="vpcd's host (default 127.0.0.1)")
    s.add_argument("--vpcd-port", type=int, default=DEFAULT_VPCD_PORT,
                   help="vpcd port of slot 0; slot n uses port + n")
    s.add_argument("--slots", type=int, default=2, help="number of slots (default 2)")
    s.add_argument("--control", type=Path, default=os.environ.get(CONTROL_ENV),
                   required=CONTROL_ENV not in os.environ,
                   help=f"Unix control socket path (default ${CONTROL_ENV})")
    s.add_argument("--insert", action="append", default=[], metavar="SLOT=FILE",
                   help="insert a card file at start-up")

    n = sub.add_parser("new-card", help="create a card file", parents=[common])
    n.add_argument("--profile", default="vendor-a", choices=["vendor-a", "vendor-b", "foreign"],
                   help="the chip's vendor profile (foreign: not a My Number Card)")
    n.add_argument("--out", type=Path, required=True, help="the card file to write")
    n.add_argument("--serial", type=_hex_int, help="CPLC IC serial (hex, 4 bytes)")
    n.add_argument("--type-c", type=parse_type_c, action="append", default=[],
                   metavar="AID:USERID[:INFO1HEX:INFO2HEX:INFO3HEX]",
                   help="a pre-personalised Type C AP (repeatable)")
    n.add_argument("--no-certificates", action="store_true",
                   help="a holder without JPKI certificates (no EF 000A / 0001)")
    n.add_argument("--force", action="store_true", help="overwrite an existing file")

    def client(name: str, help_text: str, slot: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, parents=[common])
        c.add_argument("--control", type=Path, default=os.environ.get(CONTROL_ENV),
                       required=CONTROL_ENV not in os.environ,
                       help=f"the simulator's control socket (default ${CONTROL_ENV})")
        if slot:
            c.add_argument("--slot", type=int, default=0, help="the slot (default 0)")
        return c

    ins = client("insert", "insert a card file into a slot")
    ins.add_argument("file", type=Path)
    ins.add_argument("--contactless", action="store_true",
                     help="present it as a contactless reader does (synthesised ATR, no CPLC)")
    client("remove", "remove the card from a slot")
    client("status", "show slots and cards", slot=False)
    client("selects", "list the AIDs the card received in SELECT")
    client("apdus", "list the command headers (CLA INS P1 P2) the card received")
    client("clear-apdus", "forget the recorded command headers of the card in a slot")
    f = client("fault", "inject faults into the card in a slot")
    f.add_argument("--after", type=int, metavar="N",
                   help="hold the other faults given until N more commands were answered "
                        "(--clear acts at once)")
    f.add_argument("--tear-after", type=int, metavar="N",
                   help="the card goes away after N more commands")
    f.add_argument("--garbage", type=int, metavar="N",
                   help="the next N answers are garbage")
    f.add_argument("--truncate", type=int, metavar="N",
                   help="the next N answers are cut short")
    f.add_argument("--slow-ms", type=int, metavar="MS", help="answer each command MS late")
    f.add_argument("--mute", action=argparse.BooleanOptionalAction, default=None,
                   help="the card stops (or starts again) answering")
    f.add_argument("--reader-timeout-ms", type=int, metavar="MS",
                   help="with --mute: the reader gives up after this many ms, as a CCID "
                        "reader does (needs the stack's reader shim)")
    f.add_argument("--tamper", type=int,
                   help="flip the last data byte of the next N data answers (-1: forever)")
    f.add_argument("--tamper-ins", type=_hex_int, help="only answers to this INS (hex)")
    f.add_argument("--refuse-ins", type=_hex_int, metavar="INS",
                   help="refuse one command with this INS (hex): answer --refuse-sw, do "
                        "nothing (under SCP03: after its C-MAC is checked)")
    f.add_argument("--refuse-p1", type=_hex_int, metavar="P1",
                   help="with --refuse-ins: only commands with this P1 (hex) count")
    f.add_argument("--refuse-sw", type=_hex_int, metavar="SW",
                   help="the error status word of the refusal (hex, default 6985)")
    f.add_argument("--refuse-nth", type=int, metavar="N",
                   help="refuse the Nth matching command (default 1: the next)")
    f.add_argument("--clear", action="store_true", help="clear all faults first")
    client("block-pin", "block a JPKI PIN").add_argument(
        "which", choices=["auth", "sign"], help="the JPKI authentication PIN or signing password")

    fg = sub.add_parser("finger", parents=[common],
                        help="put a finger on the virtual fingerprint sensor (or lift it)",
                        description="Present one capture of a test print to libfprint's "
                        "virtual_image sensor, as a finger placed on a real sensor; answer "
                        "each 'place your finger' prompt of `cardapctl enroll` or `login` "
                        "with one. The prints are four public-domain NIST images.")
    fg.add_argument("print_name", nargs="?", metavar="PRINT",
                    help=f"one of {', '.join(PRINT_NAMES)}, or a PNG file")
    fg.add_argument("--lift", action="store_true", help="take the finger off the sensor")
    fg.add_argument("--sensor", type=Path, default=os.environ.get(SENSOR_ENV),
                    required=SENSOR_ENV not in os.environ,
                    help=f"the sensor's socket (default ${SENSOR_ENV})")
    return p


def _serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT."""
    from .server import serve

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    inserts: list[tuple[int, Path]] = []
    for item in args.insert:
        slot, _, file = item.partition("=")
        inserts.append((int(slot), Path(file)))
    if inserts:
        def insert_when_ready() -> None:
            ctl = SimControl(args.control)
            for _ in range(100):
                if args.control.exists():
                    break
                stop.wait(0.05)
            for slot_index, path in inserts:
                ctl.insert(slot_index, path)
        threading.Thread(target=insert_when_ready, daemon=True).start()
    serve(args.vpcd_host, args.vpcd_port, args.slots, args.control, stop)
    return 0


def _new_card(args: argparse.Namespace) -> int:
    """Create a card file and print its identity (never the fake My Number)."""
    out: Path = args.out
    if out.exists() and not args.force:
        print(f"cardap-sim: {out} exists (use --force)", file=sys.stderr)
        return 1
    card = VirtualCard.create(profile=args.profile, path=out, serial=args.serial,
                              type_c=args.type_c, certificates=not args.no_certificates)
    _print(args, {"card": str(out), "card_id": card.card_id, "profile": card.profile.name,
                  "type_c": [s.aid.hex().upper() for s in args.type_c]})
    return 0


def _finger(args: argparse.Namespace) -> int:
    """Present a print to the virtual sensor, or lift the finger."""
    from cardap_sim.biometric import VirtualSensor, nist_print, read_print

    if args.lift == bool(args.print_name):
        print("cardap-sim: give a PRINT to present, or --lift", file=sys.stderr)
        return 2
    sensor = VirtualSensor(args.sensor)
    if not Path(args.sensor).exists():
        time.sleep(SENSOR_WAIT_S)  # typed just before the prompt: give fprintd a moment
    if not Path(args.sensor).exists():
        print(f"cardap-sim: the sensor {args.sensor} is not listening: the virtual sensor "
              "only listens while fprintd uses it, during an enrolment or a login (run "
              "this at its 'place your finger' prompt)", file=sys.stderr)
        return 1
    try:
        if args.lift:
            sensor.finger(False)
            result: dict[str, Any] = {"sensor": str(args.sensor), "finger": "lifted"}
        else:
            name = args.print_name
            img = (nist_print(name) if name in PRINT_NAMES else read_print(Path(name)))
            sensor.image(img)
            result = {"sensor": str(args.sensor), "finger": "presented", "print": name,
                      "width": img.width, "height": img.height}
    finally:
        sensor.close()
    _print(args, result)
    return 0


def _client(args: argparse.Namespace) -> int:
    """Run one control request and print its result as JSON."""
    ctl = SimControl(args.control)
    result: Any
    if args.command == "insert":
        result = ctl.insert(args.slot, args.file, contactless=args.contactless)
    elif args.command == "remove":
        result = ctl.remove(args.slot)
    elif args.command == "status":
        result = ctl.status()
    elif args.command == "selects":
        result = {"selects": [a.hex().upper() for a in ctl.selects(args.slot)]}
    elif args.command == "apdus":
        result = {"apdus": [h.hex().upper() for h in ctl.apdus(args.slot)]}
    elif args.command == "clear-apdus":
        result = ctl.clear_apdus(args.slot)
    elif args.command == "fault":
        kw = {k: getattr(args, k) for k in ("after", "tear_after", "garbage", "truncate",
                                            "slow_ms", "mute", "tamper", "tamper_ins",
                                            "reader_timeout_ms", "refuse_ins", "refuse_p1",
                                            "refuse_sw", "refuse_nth")
              if getattr(args, k) is not None}
        if args.clear:
            kw["clear"] = True
        result = ctl.fault(args.slot, **kw)
    else:
        result = ctl.block_pin(args.slot, args.which)
    _print(args, result)
    return 0


def _print(args: argparse.Namespace, obj: dict[str, Any]) -> None:
    """One result: JSON with --json, else text for people."""
    if getattr(args, "json", False):
        print(json.dumps(obj))
        return
    print(human(args.command, obj, getattr(args, "slot", None)))


def human(command: str, obj: dict[str, Any], slot: int | None) -> str:
    """A control answer in words."""
    if command == "status":
        lines = []
        for s in obj.get("slots", []):
            head = f"slot {s['slot']} (vpcd port {s['port']}): "
            if s.get("card_id"):
                faults = {k: v for k, v in (s.get("faults") or {}).items() if v}
                head += (f"card {s['card_id']} ({s['profile']}), {s['apdu_count']} APDUs"
                         f"{', powered' if s.get('powered') else ''}"
                         + (f", faults {faults}" if faults else "") + f"\n    {s['card']}")
            else:
                head += "empty"
            lines.append(head + ("" if s.get("connected") else " (vpcd not connected)"))
        return "\n".join(lines) or "no slots"
    if command == "insert":
        return f"inserted card {obj.get('card_id', '?')} into slot {slot}"
    if command == "remove":
        return f"removed the card from slot {slot}" if obj.get("removed") \
            else f"slot {slot} was empty"
    if command == "new-card":
        extra = f", Type C {', '.join(obj['type_c'])}" if obj.get("type_c") else ""
        return f"created {obj['card']}: card {obj['card_id']} ({obj['profile']}){extra}"
    if command == "finger":
        if obj.get("finger") == "lifted":
            return f"finger lifted from the sensor {obj['sensor']}"
        return (f"finger placed: print {obj['print']} ({obj['width']}x{obj['height']}) on "
                f"the sensor {obj['sensor']}")
    if command in ("selects", "apdus"):
        items = obj.get(command, [])
        return "\n".join(items) or f"no {command}"
    body = {k: v for k, v in obj.items() if k != "ok"}
    return f"{command}: " + (", ".join(f"{k} {v}" for k, v in body.items()) or "done")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cardap-sim` console script."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "new-card":
            return _new_card(args)
        if args.command == "finger":
            return _finger(args)
        return _client(args)
    except (SimControlError, VcardError, ValueError, OSError) as exc:
        print(f"cardap-sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
