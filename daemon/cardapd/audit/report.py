"""The yearly report: loads per organisation (10 yen each) and the audit-verification result.

Counted from the audit log, not from a separate counter, so the figures and the chain
that proves them are one thing. A load is a row with operation `load` and result `ok`
committed in the calendar year **in Japan time** (JST, as the loading service bills);
its organisation is taken from the actor (`role:organisation/operator`, see
`OpContext.actor`); a row whose detail says `billed: false` (the service matched a
retry of an already-billed journal id) is not charged, and a journal id is counted once.
Reconciliations that completed an interrupted load (`reconcile` rows) are listed
separately: their audit detail does not say whether the service billed them, so the
administrator checks them against the service's own statement.

The document (UTF-8 text, and the same content as JSON) states the period, the counts
and charges, the verification of the chain kept on the terminal (rows checked, first bad
row, the head seq and hash so a copy of the log kept elsewhere can be compared, every
anchor reset and whether an administrator acknowledged it — an unacknowledged one fails
the report), the generation time and a SHA-256 of the body, so a copy handed over can be
checked for alteration. A report made after its year ended is what lets retention drop
that year's rows (docs/decisions.md D32).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from cardap.i18n import LANGUAGES, N_, ljust, rjust, tr
from cardap.i18n import width as text_width  # the name `width` is a column here
from cardapd.audit.export import AuditFilter, query
from cardapd.audit.log import AuditRecord
from cardapd.audit.verify import Reset, VerifyResult, verify
from cardapd.errors import InvalidArgument

JST = timezone(timedelta(hours=9), "JST")
CHARGE_YEN_PER_LOAD = 10
UNKNOWN_ORGANISATION = "(unknown)"


@dataclass(frozen=True, slots=True)
class OrganisationLoads:
    """Loads of one organisation in the year (cardap.v1.OrganisationLoads)."""

    organisation: str
    loads: int
    charge_yen: int
    reconciled: int = 0


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The chain check (cardap.v1.VerifyAuditResponse, plus the head for comparison)."""

    ok: bool
    rows_checked: int
    first_bad_seq: int
    problem: str
    head_seq: int
    head_hash: str
    resets: tuple[Reset, ...] = ()
    first_seq: int = 0

    @classmethod
    def from_result(cls, result: VerifyResult) -> AuditVerification:
        """From `cardapd.audit.verify`'s result."""
        return cls(result.ok, result.rows_checked, result.first_bad_seq or 0,
                   result.problem.value if result.problem else "", result.head_seq,
                   result.head_hash, result.resets, result.first_seq)


@dataclass(frozen=True, slots=True)
class YearlyReport:
    """The report (cardap.v1.YearlyReport): figures, verification and the documents."""

    year: int
    period_start: datetime
    period_end: datetime
    organisations: tuple[OrganisationLoads, ...]
    audit: AuditVerification
    generated_at: datetime
    document: str
    document_sha256: str
    json_document: str
    language: str = "en"

    @property
    def total_loads(self) -> int:
        """Loads of every organisation."""
        return sum(o.loads for o in self.organisations)

    @property
    def total_charge_yen(self) -> int:
        """Charges of every organisation."""
        return sum(o.charge_yen for o in self.organisations)


def organisation_of(actor: str) -> str:
    """The organisation in `role:organisation/operator` (UNKNOWN_ORGANISATION if none)."""
    _, _, who = actor.partition(":")
    organisation, slash, _ = who.partition("/")
    return organisation if slash and organisation else UNKNOWN_ORGANISATION


def period(year: int) -> tuple[datetime, datetime]:
    """[1 January, next 1 January) of `year` in JST."""
    if not 2000 <= year <= 9998:
        raise InvalidArgument(f"year {year} is out of range", reason="INVALID_YEAR")
    return datetime(year, 1, 1, tzinfo=JST), datetime(year + 1, 1, 1, tzinfo=JST)


def count_loads(records: list[AuditRecord]) -> list[OrganisationLoads]:
    """Per-organisation counts from `load`/`reconcile` rows (see the module docstring)."""
    loads: Counter[str] = Counter()
    reconciled: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    for record in records:
        if record.result != "ok":
            continue
        organisation = organisation_of(record.actor)
        detail = record.detail
        if record.operation == "reconcile":
            if detail.get("action") == "load":
                reconciled[organisation] += 1
            continue
        if record.operation != "load" or detail.get("billed") is False:
            continue
        journal_id = detail.get("journal_id")
        if isinstance(journal_id, str) and journal_id:
            if (organisation, journal_id) in seen:
                continue
            seen.add((organisation, journal_id))
        loads[organisation] += 1
    names = sorted(set(loads) | set(reconciled))
    return [OrganisationLoads(n, loads[n], loads[n] * CHARGE_YEN_PER_LOAD, reconciled[n])
            for n in names]


SHA_LINE = N_("SHA-256 of the text above: {sha256}")
"""The document's last line (check_document finds it in every language)."""


def _text(lang: str, year: int, start: datetime, end: datetime,
          orgs: tuple[OrganisationLoads, ...], audit: AuditVerification,
          generated_at: datetime, terminal: str) -> str:
    """The human document body, in `lang`."""
    def t(msgid: str, **values: object) -> str:
        return tr(lang, msgid, **values)

    labels = {k: t(v) for k, v in {
        "terminal": N_("terminal:"), "period": N_("period (JST):"),
        "generated": N_("generated at:"), "charge": N_("charge:"), "result": N_("result:"),
        "rows": N_("rows checked:"), "head": N_("head:"),
        "reset": N_("anchor reset:")}.items()}
    lw = max([13] + [text_width(v) for v in labels.values()]) + 2

    def row(key: str, value: str) -> str:
        return ljust(labels[key], lw) + value

    heads = (t(N_("organisation")), t(N_("loads")), t(N_("charge (yen)")),
             t(N_("reconciled")), t(N_("total")))
    width = max([text_width(o.organisation) for o in orgs]
                + [text_width(heads[0]), text_width(heads[4])])
    cols = (max(10, text_width(heads[1])), max(14, text_width(heads[2])),
            max(10, text_width(heads[3])))
    lines = [
        t(N_("cardapd yearly report — card AP loads {year}"), year=year),
        "",
        row("terminal", terminal or "-"),
        row("period", t(N_("{start} to {end} (end excluded)"), start=start.isoformat(),
                          end=end.isoformat())),
        row("generated", generated_at.isoformat()),
        row("charge", t(N_("{yen} yen per load"), yen=CHARGE_YEN_PER_LOAD)),
        "",
        f"{ljust(heads[0], width)}  {rjust(heads[1], cols[0])}  "
        f"{rjust(heads[2], cols[1])}  {rjust(heads[3], cols[2])}",
    ]
    for o in orgs:
        lines.append(f"{ljust(o.organisation, width)}  {o.loads:>{cols[0]}}  "
                     f"{o.charge_yen:>{cols[1]}}  {o.reconciled:>{cols[2]}}")
    total_loads = sum(o.loads for o in orgs)
    total_yen = sum(o.charge_yen for o in orgs)
    lines += [f"{ljust(heads[4], width)}  {total_loads:>{cols[0]}}  {total_yen:>{cols[1]}}",
              ""]
    if not orgs:
        lines.insert(-2, t(N_("(no loads in this period)")))
    verdict = (t(N_("OK: the chain verifies")) if audit.ok else
               t(N_("FAILED: {problem} at row {seq}"), problem=audit.problem,
                 seq=audit.first_bad_seq))
    heading = (t(N_("audit log verification (every row kept on the terminal; rows from "
                    "{first} on, older rows were exported and dropped)"),
                 first=audit.first_seq) if audit.first_seq > 1 else
               t(N_("audit log verification (every row kept on the terminal)")))
    lines += [
        heading,
        "  " + row("result", verdict),
        "  " + row("rows", str(audit.rows_checked)),
        "  " + row("head", t(N_("seq {seq}, sha256 {sha256}"), seq=audit.head_seq,
                               sha256=audit.head_hash)),
    ]
    for r in audit.resets:
        state = (t(N_("acknowledged at row {seq} by {by}: {reason}"), seq=r.acknowledged_seq,
                   by=r.acknowledged_by, reason=r.reason) if r.acknowledged
                 else t(N_("NOT ACKNOWLEDGED")))
        lines.append("  " + row("reset", t(N_("row {seq} ({kind}), {state}"), seq=r.seq,
                                             kind=r.kind, state=state)))
    note = t(N_("'reconciled' counts interrupted loads completed later; whether the loading\n"
                "service billed them is in its own statement, not in this terminal's log."))
    lines += ["", *note.split("\n")]
    if not audit.ok:
        lines += ["", t(N_("WARNING: the audit log failed verification; the counts above "
                           "come from a log that was altered and cannot be relied on."))]
    return "\n".join(lines) + "\n"


def build_report(audit_path: Path, year: int, *, now: datetime | None = None,
                 head_path: Path | None = None, terminal: str = "",
                 result: VerifyResult | None = None, lang: str = "en") -> YearlyReport:
    """Count the year's loads in the audit log at `audit_path`; `result` is the chain's
    verification (None: a full one here); the text document in `lang` (the JSON document
    is codes and figures, the same in every language)."""
    start, end = period(year)
    generated_at = (now or datetime.now(UTC)).astimezone(JST)
    if result is None:
        result = verify(Path(audit_path), head_path=head_path)
    records = list(query(Path(audit_path), AuditFilter(
        since=start, until=end, operations=frozenset({"load", "reconcile"}),
        results=frozenset({"ok"}))))
    orgs = tuple(count_loads(records))
    audit = AuditVerification.from_result(result)
    body = _text(lang, year, start, end, orgs, audit, generated_at, terminal)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    document = body + "\n" + tr(lang, SHA_LINE, sha256=digest) + "\n"
    content = {
        "year": year, "terminal": terminal,
        "period": {"start": start.isoformat(), "end": end.isoformat(), "zone": "JST"},
        "charge_yen_per_load": CHARGE_YEN_PER_LOAD,
        "organisations": [{"organisation": o.organisation, "loads": o.loads,
                           "charge_yen": o.charge_yen, "reconciled": o.reconciled}
                          for o in orgs],
        "total": {"loads": sum(o.loads for o in orgs),
                  "charge_yen": sum(o.charge_yen for o in orgs)},
        "audit": {"ok": audit.ok, "rows_checked": audit.rows_checked,
                  "first_bad_seq": audit.first_bad_seq, "problem": audit.problem,
                  "head_seq": audit.head_seq, "head_hash": audit.head_hash,
                  "first_seq": audit.first_seq,
                  "resets": [{"seq": r.seq, "kind": r.kind, "acknowledged": r.acknowledged,
                              "acknowledged_by": r.acknowledged_by, "reason": r.reason}
                             for r in audit.resets]},
        "generated_at": generated_at.isoformat(),
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    json_document = json.dumps(
        {"report": content,
         "sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
         "sha256_of": "canonical JSON of 'report' (sorted keys, no spaces, UTF-8)"},
        sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    return YearlyReport(year, start, end, orgs, audit, generated_at, document, digest,
                        json_document, lang)


def check_document(document: str) -> bool:
    """True when a text report's SHA-256 line matches its body (for whoever receives it),
    in any language the report is written in."""
    for lang in LANGUAGES:
        marker = "\n" + tr(lang, SHA_LINE).partition("{sha256}")[0]
        body, sep, tail = document.rpartition(marker)
        if sep:
            return hashlib.sha256(body.encode("utf-8")).hexdigest() == tail.strip()
    return False
