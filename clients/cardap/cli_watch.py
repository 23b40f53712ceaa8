"""cardapctl's streams: `watch` (card events with their time; `--follow` rides out a daemon
restart, reconnecting and replaying the snapshot) and `metrics`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

import grpc

from cardap.cli_cards import fmt_card, fmt_reader_state, resolve_reader
from cardap.clibase import EXIT_OK, emit, lang, local_time
from cardap.client import CardapClient, CardapClientError
from cardap.i18n import tr
from cardap.v1 import cards_pb2

K = cards_pb2
RECONNECT_MAX_S = 2.0
LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL)
"""How a stream ends when the daemon stops or restarts under it."""


def fmt_event(e: cards_pb2.CardEvent) -> str:
    """One card event as a line: local time, sequence number, what happened, where."""
    name = repr(e.reader.name) if e.reader.name else ""
    kind = e.kind
    la = lang()
    if kind == K.CARD_EVENT_KIND_SNAPSHOT:
        what = tr(la, "reader {name}: {state}", name=name,
                  state=fmt_reader_state(e.reader, inline=True))
    elif kind == K.CARD_EVENT_KIND_SNAPSHOT_END:
        what = tr(la, "end of the snapshot; live events follow")
    elif kind == K.CARD_EVENT_KIND_READER_ADDED:
        what = tr(la, "reader {name} added", name=name)
    elif kind == K.CARD_EVENT_KIND_READER_REMOVED:
        what = tr(la, "reader {name} removed", name=name)
    elif kind == K.CARD_EVENT_KIND_CARD_DETECTED:
        what = tr(la, "card detected in {name}, identifying", name=name)
    elif kind == K.CARD_EVENT_KIND_CARD_INSERTED:
        what = tr(la, "card inserted in {name}: {card}", name=name,
                  card=fmt_card(e.reader.card, inline=True))
    elif kind == K.CARD_EVENT_KIND_CARD_REMOVED:
        what = tr(la, "card removed from {name}", name=name)
    elif kind == K.CARD_EVENT_KIND_CARD_MUTE:
        what = tr(la, "the card in {name} does not answer", name=name)
    elif kind == K.CARD_EVENT_KIND_DEGRADED:
        what = tr(la, "PC/SC unavailable (pcscd stopped?); cardapd reconnects")
    elif kind == K.CARD_EVENT_KIND_RECOVERED:
        what = tr(la, "PC/SC available again; a fresh snapshot follows")
    else:
        what = K.CardEventKind.Name(kind) + (f" {name}" if name else "")
    if e.detail and kind not in (K.CARD_EVENT_KIND_CARD_INSERTED,):
        what += f" ({e.detail})"
    label = K.CardEventKind.Name(kind).removeprefix("CARD_EVENT_KIND_")
    return f"{local_time(e.time)}  #{e.seq:<5} {label:<13} {what}"


def _backoff() -> Iterator[float]:
    wait = 0.2
    while True:
        yield wait
        wait = min(wait * 2, RECONNECT_MAX_S)


def cmd_watch(client: CardapClient, args: argparse.Namespace) -> int:
    """Card events until --count, --duration, Ctrl-C or (without --follow) the daemon's end."""
    readers = [resolve_reader(client, r) for r in args.reader]
    deadline = None if args.duration is None else time.monotonic() + args.duration
    count = 0
    conn = client
    waits = _backoff()
    while True:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        limit = remaining if args.timeout is None else min(
            x for x in (remaining, args.timeout) if x is not None)
        try:
            for ev in conn.watch(readers, timeout=limit):
                waits = _backoff()  # connected: the next loss starts waiting short again
                emit(args, ev, fmt_event)
                count += 1
                if args.count and count >= args.count:
                    return EXIT_OK
            lost: CardapClientError | None = None
        except CardapClientError as err:
            if err.code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None \
                    and time.monotonic() >= deadline - 0.01:
                return EXIT_OK  # --duration reached
            if err.code not in LOST and err.reason != "DAEMON_UNREACHABLE":
                raise
            lost = err
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_OK
        if not args.follow:
            raise lost or CardapClientError(
                grpc.StatusCode.UNAVAILABLE, "DAEMON_UNREACHABLE",
                "the daemon ended the event stream (stopped or restarted); --follow "
                "reconnects", {})
        note = lost.reason if lost is not None else tr(lang(), "stream ended")
        print("cardapctl: " + tr(lang(), "event stream lost ({note}); reconnecting ...",
                                 note=note), file=sys.stderr, flush=True)
        if conn is not client:
            conn.close()
        while True:
            time.sleep(next(waits))
            conn = args.connect()
            try:
                conn.status()
                break
            except CardapClientError:
                conn.close()
                if deadline is not None and time.monotonic() >= deadline:
                    return EXIT_OK
        print("cardapctl: " + tr(lang(), "reconnected; the snapshot follows"),
              file=sys.stderr, flush=True)


def cmd_metrics(client: CardapClient, args: argparse.Namespace) -> int:
    """Metric snapshots every --interval seconds, --count of them."""
    for count, snap in enumerate(client.metrics(args.interval, args.prefix,
                                                timeout=args.timeout), 1):
        emit(args, snap, lambda s: "\n".join(
            f"{x.name}{{{','.join(f'{k}={v!r}' for k, v in sorted(x.labels.items()))}}}"
            f" {x.value:g}" for x in s.samples))
        if count >= args.count:
            break
    return EXIT_OK
