"""cardapctl's card and reader commands: status, readers, read-id, diagnose, loadable, aps,
load (with a progress bar driven by the daemon's per-block progress) and delete (confirmed,
and saying what it deleted). Readers are named by index, name or a unique part of it."""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from cardap import exitcodes
from cardap.clibase import (
    EXIT_OK,
    CliError,
    Msg,
    confirm,
    emit,
    enum_name,
    lang,
)
from cardap.client import CardapClient, CardapClientError, default_socket
from cardap.i18n import N_, ljust, tr, width
from cardap.v1 import cards_pb2, terminal_pb2

VERDICT_EXIT = {
    terminal_pb2.VERDICT_OK: exitcodes.OK, terminal_pb2.VERDICT_WARNING: exitcodes.WARNING,
    terminal_pb2.VERDICT_CARD_FAULT: exitcodes.CARD_FAULT,
    terminal_pb2.VERDICT_READER_FAULT: exitcodes.READER_FAULT,
    terminal_pb2.VERDICT_NO_CARD: exitcodes.NO_CARD,
}
KIND_TEXT = {cards_pb2.CARD_KIND_MY_NUMBER_CARD: N_("My Number Card"),
             cards_pb2.CARD_KIND_OTHER: N_("not a My Number Card"),
             cards_pb2.CARD_KIND_UNKNOWN: N_("unidentified card")}
CARD = N_("card")
AP_TYPE_TEXT = {cards_pb2.AP_TYPE_A: "A", cards_pb2.AP_TYPE_C: "C", cards_pb2.AP_TYPE_D: "D",
                cards_pb2.AP_TYPE_CUSTOM: N_("custom")}
AVAILABILITY_TEXT = {
    terminal_pb2.SERVICE_AVAILABILITY_UNKNOWN: N_("unknown"),
    terminal_pb2.SERVICE_AVAILABILITY_OPEN: N_("open"),
    terminal_pb2.SERVICE_AVAILABILITY_CLOSED: N_("closed"),
    terminal_pb2.SERVICE_AVAILABILITY_MAINTENANCE: N_("maintenance"),
}
LINK_TEXT = {terminal_pb2.LOADING_LINK_NOT_CONFIGURED: N_("not configured"),
             terminal_pb2.LOADING_LINK_UNKNOWN: N_("unknown"),
             terminal_pb2.LOADING_LINK_UP: N_("up")}
FINGERPRINT_DEVICE_TEXT = {"unknown": N_("unknown"), "ok": N_("ok"),
                           "no_device": N_("no device"), "unavailable": N_("unavailable"),
                           "not_configured": N_("not configured")}
"""The daemon's fingerprint device states (telemetry.metrics.BIOMETRIC_STATES) in words."""
READER_STATE_TEXT = {cards_pb2.READER_STATE_EMPTY: N_("empty"),
                     cards_pb2.READER_STATE_CARD_MUTE: N_("a card that does not answer"),
                     cards_pb2.READER_STATE_UNAVAILABLE: N_("unavailable"),
                     cards_pb2.READER_STATE_CARD_IDENTIFYING: N_("a card, being identified")}
PHASE_TEXT = {terminal_pb2.LOAD_PHASE_CONNECTING: N_("connecting"),
              terminal_pb2.LOAD_PHASE_SECURE_CHANNEL: N_("secure channel"),
              terminal_pb2.LOAD_PHASE_LOADING: N_("loading"),
              terminal_pb2.LOAD_PHASE_INSTALLING: N_("installing"),
              terminal_pb2.LOAD_PHASE_PERSONALISING: N_("personalising"),
              terminal_pb2.LOAD_PHASE_DONE: N_("done")}


def ap_type(language: str, value: cards_pb2.APType.ValueType) -> str:
    """An AP's type in words: `A`, `C`, `D`, `custom`."""
    return tr(language, AP_TYPE_TEXT.get(value, "?"))


def in_words(language: str, texts: dict[Any, str], value: Any, fallback: str) -> str:
    """`value` in words from `texts` (message ids), else `fallback` (a code as it is)."""
    return tr(language, texts[value]) if value in texts else fallback


# ---------------------------------------------------------------- readers by index or name

def resolve_reader(client: CardapClient, value: str) -> str:
    """The reader's full name from an index (`0`), a full name or a unique part of it.

    An index beyond the readers, or a part matching several, is a usage error; a name
    matching nothing goes to the daemon as given (which answers NO_READER)."""
    if not value:
        return ""
    names = [r.name for r in client.readers().readers]
    if value in names:
        return value
    listing = "; ".join(f"{i}: {n}" for i, n in enumerate(names))
    if value.isdigit():
        index = int(value)
        if index < len(names):
            return names[index]
        raise CliError(Msg("there is no reader {index} ({listing})", index=index,
                           listing=lambda la: listing or tr(la, "no readers")))
    matches = [n for n in names if value.lower() in n.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(Msg("{value} names {count} readers ({names}): give more of the name, "
                           "or its index", value=repr(value), count=len(matches),
                           names="; ".join(matches)))
    return value


def reader_completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Shell completion of --reader: the daemon's reader names (nothing if unreachable)."""
    socket = getattr(parsed_args, "socket", None) or default_socket(
        getattr(parsed_args, "role", None) or "ops", getattr(parsed_args, "socket_dir", None))
    try:
        with CardapClient(socket, timeout=2.0) as client:
            names = [r.name for r in client.readers().readers]
    except CardapClientError:
        return []
    return [n for n in names if n.startswith(prefix)]


# ---------------------------------------------------------------- text forms

def fmt_card(c: cards_pb2.Card, inline: bool = False) -> str:
    """`My Number Card 4790-C2627064 (vendor-a)`; Type C reads on their own lines, or
    after `;` on the same line (`inline`: one event, one line)."""
    la = lang()
    kind = KIND_TEXT.get(c.kind, CARD)
    text = tr(la, kind)
    if c.card_id:
        text += f" {c.card_id}"
    if c.profile:
        text += f" ({c.profile})"
    for t in c.tap:
        read = t.user_id or tr(la, "unreadable ({reason})", reason=t.reason)
        text += ("; " if inline else "\n      ") + tr(la, "Type C {aid}: {user_id}",
                                                      aid=t.aid, user_id=read)
    return text


def fmt_reader_state(r: cards_pb2.Reader, inline: bool = False) -> str:
    """What a reader holds, in words."""
    if r.state == cards_pb2.READER_STATE_CARD_PRESENT and r.HasField("card"):
        return fmt_card(r.card, inline)
    return in_words(lang(), READER_STATE_TEXT, r.state,
                    enum_name(cards_pb2.ReaderState, r.state, "READER_STATE_"))


def fmt_reader(r: cards_pb2.Reader) -> str:
    """One reader: `Virtual PCD 00 00: My Number Card ...`."""
    return f"{r.name}: {fmt_reader_state(r)}"


def fmt_preset(language: str, p: terminal_pb2.PresetSet, default: str) -> str:
    """`preset counter (default): ap-1, ap-2`."""
    return tr(language, "preset {name}{default}: {aps}", name=p.name, aps=", ".join(p.ap_ids),
              default=tr(language, " (default)") if p.name == default else "")


def plural(n: int, one: str, many: str | None = None) -> str:
    """`1 AP`, `2 APs`."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


# ---------------------------------------------------------------- commands

def cmd_status(client: CardapClient, args: argparse.Namespace) -> int:
    """Daemon status."""
    st = client.status()
    emit(args, st, fmt_status)
    return EXIT_OK


def fmt_status(s: terminal_pb2.GetStatusResponse) -> str:
    """The daemon's status, for people, in the user's language."""
    la = lang()
    lines = [
        tr(la, "cardapd {version} (socket role {role})", version=s.version, role=s.role),
        tr(la, "  PC/SC: {state}", state=tr(la, "available") if s.pcsc_available
           else tr(la, "UNAVAILABLE")),
        tr(la, "  readers: {readers}, cards: {cards}", readers=s.readers, cards=s.cards),
        tr(la, "  audit rows: {rows}", rows=s.audit_head_seq),
        fmt_service(s),
        tr(la, "  capabilities: {capabilities}", capabilities=", ".join(s.capabilities)),
    ]
    if s.HasField("loading_cert_not_after"):
        lines.append(tr(la, "  loading certificate valid until {when} UTC",
                        when=f"{s.loading_cert_not_after.ToDatetime():%Y-%m-%d %H:%M}"))
    lines += [tr(la, "  WARNING: {warning}", warning=w) for w in s.warnings]
    return "\n".join(lines)


def _when(ts: Timestamp) -> str:
    """A timestamp in local time, or "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(UTC).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def fmt_service(s: terminal_pb2.GetStatusResponse) -> str:
    """The loading service, revocation feeds and fingerprint device lines of `status`."""
    svc = s.loading_service
    la = lang()
    lines = [tr(la, "  loading service: {link}", link=fmt_link(s.loading_link))]
    if s.loading_link.state != terminal_pb2.LOADING_LINK_NOT_CONFIGURED:
        avail = in_words(la, AVAILABILITY_TEXT, svc.availability, enum_name(
            terminal_pb2.ServiceAvailability, svc.availability, "SERVICE_AVAILABILITY_"))
        if svc.availability == terminal_pb2.SERVICE_AVAILABILITY_OPEN:
            avail = tr(la, "{availability} until {when}", availability=avail,
                       when=_when(svc.next_closing))
        elif svc.availability != terminal_pb2.SERVICE_AVAILABILITY_UNKNOWN:
            avail = tr(la, "{availability}, opens {when}", availability=avail,
                       when=_when(svc.next_opening))
        lines.append(tr(la, "    now: {availability}", availability=avail))
        if svc.HasField("next_maintenance"):
            m = svc.next_maintenance
            lines.append(tr(la, "    next maintenance: {start} to {end} ({description})",
                            start=_when(m.start), end=_when(m.end),
                            description=m.description))
        else:
            lines.append(tr(la, "    next maintenance: none announced"))
        if svc.HasField("schedule_fetched_at"):
            lines.append(tr(la, "    schedule fetched {when}; clock offset {offset} s",
                            when=_when(svc.schedule_fetched_at),
                            offset=f"{svc.clock_offset_s:+.1f}"))
    for f in s.revocation_feeds:
        age = (tr(la, "never pulled") if f.age_s < 0
               else tr(la, "{seconds} s old", seconds=f.age_s))
        lines.append(tr(la, "  revocation feed {organisation}: {age}",
                        organisation=f.organisation, age=age)
                     + (tr(la, " (STALE)") if f.stale else ""))
    lines.append(tr(la, "  fingerprint device: {state}", state=in_words(
        la, FINGERPRINT_DEVICE_TEXT, s.fingerprint_device,
        s.fingerprint_device.replace("_", " "))))
    return "\n".join(lines)


def fmt_link(link: terminal_pb2.LoadingLinkStatus) -> str:
    """`up (loading.example:7443)`, `DOWN: tls_files (…)`, `not configured`."""
    la = lang()
    if link.state == terminal_pb2.LOADING_LINK_DOWN:
        text = tr(la, "DOWN: {error}", error=link.last_error)
    else:
        text = in_words(la, LINK_TEXT, link.state, enum_name(
            terminal_pb2.LoadingLinkState, link.state, "LOADING_LINK_").replace("_", " "))
    return tr(la, "{link} ({address})", link=text, address=link.address) if link.address \
        else text


def cmd_readers(client: CardapClient, args: argparse.Namespace) -> int:
    """Readers with their index (what --reader takes), and their cards."""
    resp = client.readers()
    width = max((len(r.name) for r in resp.readers), default=0)
    emit(args, resp, lambda r: "\n".join(
        f"{i}  {x.name:<{width}}  {fmt_reader_state(x)}" for i, x in enumerate(r.readers))
        or tr(lang(), "no readers"))
    return EXIT_OK if resp.pcsc_available else exitcodes.UNAVAILABLE


def cmd_read_id(client: CardapClient, args: argparse.Namespace) -> int:
    """Read a Type C user ID."""
    resp = client.read_user_id(resolve_reader(client, args.reader), args.aid,
                               fresh=args.fresh)
    la = lang()
    emit(args, resp, lambda r: tr(
        la, "{user_id}  (card {card}, reader {reader}, AP {aid}, {source})",
        user_id=r.user_id, card=r.card_id, reader=repr(r.reader), aid=r.aid,
        source=tr(la, "from the tap cache") if r.cached else tr(la, "read now")))
    return EXIT_OK


def fmt_diagnosis(resp: terminal_pb2.DiagnoseResponse) -> str:
    """Each reader's checks, verdict and next action (the daemon's texts come in the
    language the CLI asked for; in English the checks are named by their stable names)."""
    la = lang()
    lines = []
    for d in resp.readers:
        verdict = enum_name(terminal_pb2.Verdict, d.verdict, "VERDICT_").upper()
        if la != "en" and d.verdict_text:
            verdict = f"{d.verdict_text} ({verdict})"
        name = d.reader.name or tr(la, "(no reader)")
        lines.append(f"{name}: {verdict}")
        for c in d.checks:
            name = c.title if la != "en" and c.title else c.name
            mark = tr(la, "ok") if c.ok else tr(la, "FAIL")
            lines.append(f"  [{mark}] {name}: {c.detail}")
        for ap in d.aps:
            lines.append(tr(la, "  AP {name} {aid}: {answer}", name=ap.name, aid=ap.aid,
                            answer=tr(la, "answers") if ap.present else tr(la, "absent")))
        lines.append(f"  → {d.next_action}")
    return "\n".join(lines)


def cmd_diagnose(client: CardapClient, args: argparse.Namespace) -> int:
    """Card fault isolation; the exit code is the worst verdict's."""
    resp = client.diagnose(resolve_reader(client, args.reader))
    emit(args, resp, fmt_diagnosis)
    return VERDICT_EXIT.get(resp.verdict, exitcodes.FAIL)


def cmd_loadable(client: CardapClient, args: argparse.Namespace) -> int:
    """The organisation's catalogue and presets."""
    resp = client.loadable_aps()

    def text(r: terminal_pb2.ListLoadableApsResponse) -> str:
        la = lang()
        lines = [tr(la, "{ap_id}: {name} (type {type}, {area} area, instance {aid})",
                    ap_id=a.ap_id, name=a.display_name or a.ap_id, type=ap_type(la, a.type),
                    area=a.area or tr(la, "any"), aid=a.instance_aid) for a in r.aps]
        lines += [fmt_preset(la, p, r.default_preset) for p in r.presets]
        return "\n".join(lines) or tr(la, "nothing to load")
    emit(args, resp, text)
    return EXIT_OK


def cmd_aps(client: CardapClient, args: argparse.Namespace) -> int:
    """The APs on the card, as a table, and the free space."""
    resp = client.card_aps(resolve_reader(client, args.reader))

    def text(r: terminal_pb2.ListCardApsResponse) -> str:
        la = lang()
        rows = [(tr(la, "AID"), tr(la, "TYPE"), tr(la, "AREA"), tr(la, "STATE"))] + [
            (a.aid, ap_type(la, a.type), a.area or "-", a.lifecycle or "-") for a in r.aps]
        widths = [max(width(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(ljust(cell, w) for cell, w in zip(row, widths, strict=True))
                 .rstrip() for row in rows] if r.aps else [tr(la, "no card APs found")]
        if r.free_bytes:
            areas = [tr(la, "{area} {n} bytes", area=area, n=n)
                     for area, n in sorted(r.free_bytes.items())]
            lines.append(tr(la, "free: {areas}", areas=", ".join(areas)))
        return "\n".join(lines)
    emit(args, resp, text)
    return EXIT_OK


class LoadBar:
    """A progress bar per AP on stderr (tqdm), moved by the daemon's per-block progress."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None
        self.ap = ""

    def progress(self, p: terminal_pb2.LoadProgress) -> None:
        """One progress event."""
        if not self.enabled:
            return
        if self.bar is None or p.ap_id != self.ap:
            self.close()
            self.ap = p.ap_id
            size = shutil.get_terminal_size(fallback=(80, 24))  # a terminal of size 0x0
            self.bar = tqdm(total=100, desc=p.ap_id, unit="%", file=sys.stderr,  # draws
                            leave=True, ncols=size.columns or 80,  # nothing: say 80x24
                            nrows=size.lines or 24, mininterval=0,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        la = lang()
        phase = in_words(la, PHASE_TEXT, p.phase, enum_name(
            terminal_pb2.LoadPhase, p.phase, "LOAD_PHASE_").replace("_", " "))
        blocks = tr(la, ", block {done}/{total}", done=p.blocks_done,
                    total=p.blocks_total) if p.blocks_total else ""
        self.bar.set_postfix_str(phase + blocks, refresh=False)
        self.bar.update(max(int(p.percent) - self.bar.n, 0))
        self.bar.refresh()

    def close(self) -> None:
        """Finish the current bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_load(client: CardapClient, args: argparse.Namespace) -> int:
    """Load an AP or a preset: a bar while the card works, then a line per AP."""
    reader = resolve_reader(client, args.reader)
    bar = LoadBar(enabled=not args.json and not args.quiet and sys.stderr.isatty())
    worst = EXIT_OK
    try:
        for ev in client.load_ap(args.ap or "", preset=args.preset or "", reader=reader,
                                 custom_user_id=args.custom_user_id,
                                 default_preset=args.default_preset,
                                 timeout=args.call_timeout):
            if ev.WhichOneof("event") == "progress":
                if args.json:
                    emit(args, ev, str)
                else:
                    bar.progress(ev.progress)
                continue
            r = ev.result
            bar.close()
            if not r.ok and worst == EXIT_OK:
                worst = exitcodes.for_reason(r.reason) if r.reason else exitcodes.FAIL
            emit(args, ev, lambda e: fmt_load_result(e.result))
    finally:
        bar.close()
    return worst


def fmt_load_result(r: terminal_pb2.LoadResult) -> str:
    """One AP's result line (a failure keeps the daemon's reason code and message)."""
    la = lang()
    if r.already_present:
        return tr(la, "{ap_id}: already on the card ({aid}), skipped", ap_id=r.ap_id,
                  aid=r.aid)
    if r.ok:
        return tr(la, "{ap_id}: loaded as {aid}, user ID {user_id}, {free} bytes free",
                  ap_id=r.ap_id, aid=r.aid, user_id=r.user_id, free=r.free_bytes)
    return tr(la, "{ap_id}: FAILED {reason}: {message}", ap_id=r.ap_id, reason=r.reason,
              message=r.message)


def cmd_delete(client: CardapClient, args: argparse.Namespace) -> int:
    """Delete an AP: confirmed first (unless --yes), and the answer says what went."""
    aid = args.aid.strip().upper()
    try:
        bytes.fromhex(aid)
    except ValueError:
        raise CliError(Msg("--aid {aid} is not hexadecimal", aid=repr(args.aid))) from None
    reader = resolve_reader(client, args.reader)
    if not args.yes:
        confirm(Msg("Delete {what}?", what=describe_ap(client, aid, reader)),
                assume_yes=False)
    if args.reason == "other" and not args.reason_detail.strip():
        raise CliError(Msg("--reason other needs --reason-detail: say what the reason is"),
                       code=exitcodes.USAGE)
    resp = client.delete_ap(aid, reader, reason=args.reason, reason_detail=args.reason_detail)

    def text(r: terminal_pb2.DeleteApResponse) -> str:
        la = lang()
        what = f"{r.ap_id} (AP {r.aid or aid})" if r.ap_id else f"AP {r.aid or aid}"
        card = (tr(la, "card {card}", card=r.card_id) if r.card_id
                else tr(la, "the card"))
        where = tr(la, " in {reader}", reader=repr(r.reader)) if r.reader else ""
        if r.outcome == "ALREADY_ABSENT":
            return tr(la, "{what} was not on {card}{where}: nothing deleted; {free} bytes "
                      "free", what=what, card=card, where=where, free=r.free_bytes)
        return tr(la, "deleted {what} from {card}{where}; {free} bytes free", what=what,
                  card=card, where=where, free=r.free_bytes)
    emit(args, resp, text)
    return EXIT_OK


def describe_ap(client: CardapClient, aid: str, reader: str) -> Msg:
    """`AP D392... (type C, extended area) from card 4790-... in 'Reader'`, as far as the
    daemon can tell before the delete (in any language: the confirmation's question)."""
    where = Msg("the card in {reader}", reader=repr(reader)) if reader else Msg("the card")
    try:
        holders = [r for r in client.readers().readers if r.HasField("card")
                   and (r.name == reader or not reader)]
        if len(holders) == 1:
            where = Msg("card {card} in {reader}", card=holders[0].card.card_id,
                        reader=repr(holders[0].name))
        listing = client.card_aps(reader)
    except CardapClientError:
        return Msg("{what} from {where}", what=f"AP {aid}", where=where)
    found = next((a for a in listing.aps if a.aid.upper() == aid), None)
    if found is None:
        what = Msg("AP {aid} (not found on the card)", aid=aid)
    elif found.area:
        what = Msg("AP {aid} (type {type}, {area} area)", aid=aid, area=found.area,
                   type=lambda la: ap_type(la, found.type))
    else:
        what = Msg("AP {aid} (type {type})", aid=aid,
                   type=lambda la: ap_type(la, found.type))
    return Msg("{what} from {where}", what=what, where=where)
