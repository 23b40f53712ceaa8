"""The operations journal: rows before the first APDU, interrupted at restart, reconciled."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cardapd.loading.journal import JOURNAL_SCHEMA, Journal
from cardapd.myna.cardid import CardIdKey


def test_start_finish_and_unfinished(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    a = j.start(card_id="4790-01", action="load", ap_id="x", aid="D392F000430A0001",
                organisation="org-a", operator="op")
    b = j.start(card_id="4790-01", action="delete", ap_id="y", aid="D392F000430A0002",
                organisation="org-a", operator="op")
    assert [r.id for r in j.unfinished("4790-01")] == [a, b]
    j.finish(a, "done", "LOADED")
    j.finish(b, "failed", "CARD_REMOVED", reconcile=True)
    rows = j.unfinished("4790-01")
    assert [(r.id, r.state) for r in rows] == [(b, "failed")]
    j.finish(b, "reconciled", "RECONCILED")
    assert j.unfinished("4790-01") == []
    assert j.get(a) is not None
    assert j.get(a).outcome == "LOADED"
    assert j.unfinished("other") == []
    j.close()


def test_started_rows_become_interrupted_at_the_next_start(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    jid = j.start(card_id="c", action="load", ap_id="x", aid="AA", organisation="o",
                  operator="p")
    j.close()  # as if killed: the row says "started"
    j2 = Journal(tmp_path / "journal.db")
    assert j2.mark_interrupted() == 1
    [row] = j2.unfinished("c")
    assert (row.id, row.state, row.needs_reconcile) == (jid, "interrupted", True)
    assert j2.mark_interrupted() == 0
    j2.close()


def test_wal_and_versioned(tmp_path: Path) -> None:
    Journal(tmp_path / "journal.db").close()
    with sqlite3.connect(tmp_path / "journal.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == JOURNAL_SCHEMA.latest
        assert db.execute("SELECT count(*) FROM operations").fetchone()[0] == 0


def test_bad_values_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    with pytest.raises(ValueError, match="action"):
        j.start(card_id="c", action="format", ap_id="x", aid="AA", organisation="o",
                operator="p")
    with pytest.raises(ValueError, match="state"):
        j.finish("j-1", "half", "")
    j.close()


def test_cards_that_cannot_be_identified_await_confirmation(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.db")
    mine = j.start(card_id="unconfirmed-0011223344556677", action="load", ap_id="x",
                   aid="AA", organisation="o", operator="p")
    j.start(card_id="cert-00112233445566778899", action="load", ap_id="x", aid="AA",
            organisation="o", operator="p")
    legacy = j.start(card_id="atr-0123456789ABCDEF", action="load", ap_id="y", aid="BB",
                     organisation="o", operator="p")
    assert [r.id for r in j.awaiting_confirmation()] == [mine]
    # an `atr-` id named every card of a kind: it too waits for a confirmation
    assert j.adopt_legacy_ids(CardIdKey(bytes(32))) == 1
    assert [r.id for r in j.awaiting_confirmation()] == [mine, legacy]
    assert j.get(legacy).card_id == "unconfirmed-atr-0123456789ABCDEF"
    # a card is looked up under every one of its ids
    assert len(j.unfinished(["cplc-X", "cert-00112233445566778899"])) == 1
    j.close()
