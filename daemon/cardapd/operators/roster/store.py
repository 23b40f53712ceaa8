"""The roster (SQLite): organisations, operators and their rights, permitted APs, presets.

Administration rules, enforced here whatever the API layer checks:

* every change is made `by` an administrator session's `Operator` of the **same**
  organisation, re-read from the roster (enabled, still an administrator); `by=None` is
  refused (ADMINISTRATOR_REQUIRED): no client can act for an organisation without one;
* the first administrator of an organisation (or the next, once it has none) is made by
  `bootstrap_administrator`, which the daemon calls only for the local act of
  `cardapd bootstrap-admin` (a one-time secret only root can place, see
  `cardapd.operators.bootstrap`); organisations come from the configuration;
* password fallback is granted only by an administrator (never to oneself), with a reason
  and an expiry in the future (at most `MAX_APPROVAL`);
* an administrator cannot disable or remove themselves (an organisation keeps a way in);
* operators are never deleted: `remove_operator` marks them removed (a trigger refuses a
  DELETE), so an operator id names one person for the life of the roster.

Every change returns a `RosterChange` for the caller's audit row; nothing here logs a
password or its hash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cardapd.domain import Operator, OrganisationRules, Right
from cardapd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotAuthorized,
    NotFound,
)
from cardapd.operators.roster.model import (
    FINGERS,
    OperatorRecord,
    Organisation,
    PasswordApproval,
    RosterChange,
    check_id,
    check_rights,
    check_text,
    check_time,
    from_us,
    to_us,
)
from cardapd.operators.roster.passwords import Hasher, PasswordCheck, check_password, check_policy
from cardapd.operators.roster.schema import ROSTER_SCHEMA
from cardapd.storage import Durability, open_database

MAX_APPROVAL = timedelta(days=366)
"""Longest password-fallback approval an administrator may grant at once."""

_COLS = ("organisation, operator_id, display_name, rights, enabled, administrator, locked, "
         "failed_password_tries, enrolled_fingers, approved_by, approval_reason, "
         "approved_at_us, expires_at_us, removed_us, removed_by")
_HASH = 15  # the password hash's column after _COLS
_HAS_ADMIN = ("SELECT 1 FROM operators WHERE organisation = ? AND administrator = 1 "
              "AND enabled = 1 AND removed_us IS NULL")


def _record(row: Sequence[Any]) -> OperatorRecord:
    """An `OperatorRecord` from a `SELECT {_COLS}` row."""
    approval = None
    if row[9] is not None:
        approval = PasswordApproval(row[9], row[10], from_us(row[11]), from_us(row[12]))
    rights = frozenset(Right(r) for r in row[3].split(",") if r)
    fingers = tuple(f for f in row[8].split(",") if f)
    removed = from_us(row[13]) if row[13] is not None else None
    return OperatorRecord(row[0], row[1], row[2], rights, bool(row[4]), bool(row[5]),
                          fingers, approval, bool(row[6]), int(row[7]), removed,
                          row[14] or "")


def _present(record: OperatorRecord) -> OperatorRecord:
    """`record` unless removed (FAILED_PRECONDITION `OPERATOR_REMOVED`)."""
    if record.removed:
        raise FailedPrecondition(f"operator {record.actor} was removed from the roster; a "
                                 "removed operator cannot be changed",
                                 reason="OPERATOR_REMOVED",
                                 metadata={"organisation": record.organisation,
                                           "operator_id": record.operator_id})
    return record


def _rights_text(rights: Iterable[Right]) -> str:
    return ",".join(sorted(r.value for r in rights))


class Roster:
    """The roster database; thread-safe (one connection under a lock)."""

    def __init__(self, path: Path, *, hasher: Hasher | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = Path(path)
        self.hasher = hasher or Hasher()
        self._clock = clock
        self._db = open_database(self.path, ROSTER_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Roster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction. Every roster write is administration (or a password
        attempt's counter): committed to survive a power loss."""
        return self._db.write(Durability.POWER)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._db.read(sql, params)

    @staticmethod
    def _get(conn: sqlite3.Connection, organisation: str, operator_id: str
             ) -> tuple[OperatorRecord, str | None]:
        row = conn.execute(f"SELECT {_COLS}, password_hash FROM operators "  # noqa: S608
                           "WHERE organisation = ? AND operator_id = ?",
                           (organisation, operator_id)).fetchone()
        if row is None:
            raise NotFound(f"no operator {organisation}/{operator_id} on the roster",
                           reason="OPERATOR_NOT_FOUND",
                           metadata={"organisation": organisation, "operator_id": operator_id})
        return _record(row), row[_HASH]

    @staticmethod
    def _require_org(conn: sqlite3.Connection, organisation: str) -> None:
        if conn.execute("SELECT 1 FROM organisations WHERE organisation = ?",
                        (organisation,)).fetchone() is None:
            raise NotFound(f"no organisation {organisation!r} on the roster",
                           reason="ORGANISATION_NOT_FOUND",
                           metadata={"organisation": organisation})

    def _authorise(self, conn: sqlite3.Connection, organisation: str,
                   by: Operator | None) -> str:
        """The acting administrator's actor string, or NotAuthorized."""
        if by is None:
            raise NotAuthorized("this change needs an administrator session of "
                                f"{organisation}", reason="ADMINISTRATOR_REQUIRED")
        if by.organisation != organisation:
            raise NotAuthorized(f"administrator {by.actor} cannot change organisation "
                                f"{organisation}", reason="OTHER_ORGANISATION")
        try:
            admin, _ = self._get(conn, by.organisation, by.operator_id)
        except NotFound:
            admin = None
        if admin is None or admin.removed or not admin.enabled or not admin.administrator:
            raise NotAuthorized(f"{by.actor} is not an enabled administrator of "
                                f"{organisation}", reason="NOT_ADMINISTRATOR")
        return admin.actor

    def _now(self, now: datetime | None) -> datetime:
        return check_time("now", now if now is not None else self._clock())

    # --- organisations and operators -------------------------------------------------

    def add_organisation(self, organisation: str, display_name: str, *,
                         now: datetime | None = None) -> RosterChange:
        """Add an organisation (the daemon does, from [operators.organisations] at start)."""
        check_id("organisation", organisation)
        name = check_text("display name", display_name)
        with self._tx() as conn:
            try:
                conn.execute("INSERT INTO organisations VALUES (?, ?, ?)",
                             (organisation, name, to_us(self._now(now))))
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"organisation {organisation} already exists",
                                    reason="ORGANISATION_EXISTS") from exc
        return RosterChange("", "roster_add_organisation", organisation, None,
                            {"display_name": name})

    def organisations(self) -> list[Organisation]:
        """Every organisation, by id."""
        rows = self._read("SELECT organisation, display_name FROM organisations "
                          "ORDER BY organisation")
        return [Organisation(r[0], r[1]) for r in rows]

    def add_operator(self, organisation: str, operator_id: str, display_name: str,
                     rights: Iterable[Right], *, by: Operator | None,
                     now: datetime | None = None) -> RosterChange:
        """Add an enabled operator with `rights` (never ADMINISTER: appoint instead)."""
        check_id("organisation", organisation)
        check_id("operator_id", operator_id)
        name = check_text("display name", display_name)
        granted = check_rights(rights)
        stamp = to_us(self._now(now))
        with self._tx() as conn:
            self._require_org(conn, organisation)
            actor = self._authorise(conn, organisation, by)
            self._insert(conn, organisation, operator_id, name, granted, stamp)
            record, _ = self._get(conn, organisation, operator_id)
        return RosterChange(actor, "roster_add_operator", organisation, operator_id,
                            {"rights": sorted(r.value for r in granted)}, record)

    def _insert(self, conn: sqlite3.Connection, organisation: str, operator_id: str,
                name: str, rights: frozenset[Right], stamp: int,
                administrator: bool = False) -> None:
        """Insert a new operator; ALREADY_EXISTS when the id is or was in use."""
        try:
            existing, _ = self._get(conn, organisation, operator_id)
        except NotFound:
            existing = None
        if existing is not None and existing.removed:
            raise AlreadyExists(f"operator id {organisation}/{operator_id} belonged to an "
                                "operator removed from the roster; operator ids are never "
                                "used again: choose another", reason="OPERATOR_ID_USED",
                                metadata={"organisation": organisation,
                                          "operator_id": operator_id})
        if existing is not None:
            raise AlreadyExists(f"operator {organisation}/{operator_id} already exists",
                                reason="OPERATOR_EXISTS")
        conn.execute("INSERT INTO operators (organisation, operator_id, display_name, "
                     "rights, administrator, created_us, updated_us) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (organisation, operator_id, name, _rights_text(rights),
                      int(administrator), stamp, stamp))

    def bootstrap_administrator(self, organisation: str, operator_id: str,
                                display_name: str, rights: Iterable[Right], *,
                                now: datetime | None = None) -> RosterChange:
        """Appoint the administrator of an organisation that has none (the operator is
        added when new, enabled and appointed otherwise). Only for the local bootstrap act
        (`cardapd.operators.bootstrap`): nothing here checks who asks."""
        check_id("organisation", organisation)
        check_id("operator_id", operator_id)
        granted = check_rights(rights)
        stamp = to_us(self._now(now))
        with self._tx() as conn:
            self._require_org(conn, organisation)
            if conn.execute(_HAS_ADMIN, (organisation,)).fetchone() is not None:
                raise FailedPrecondition(
                    f"organisation {organisation} has an enabled administrator: they add "
                    "and appoint administrators", reason="ADMINISTRATOR_EXISTS",
                    metadata={"organisation": organisation})
            try:
                record, _ = self._get(conn, organisation, operator_id)
            except NotFound:
                name = check_text("display name", display_name, required=False)
                self._insert(conn, organisation, operator_id, name or operator_id, granted,
                             stamp, administrator=True)
                added = True
            else:
                _present(record)
                rights_sql = _rights_text(granted | record.rights)
                conn.execute("UPDATE operators SET administrator = 1, enabled = 1, rights = ?, "
                             "updated_us = ? WHERE organisation = ? AND operator_id = ?",
                             (rights_sql, stamp, organisation, operator_id))
                added = False
            record, _ = self._get(conn, organisation, operator_id)
        return RosterChange("", "roster_bootstrap_administrator", organisation, operator_id,
                            {"added": added, "rights": sorted(r.value for r in record.rights),
                             "authorised_by": "local bootstrap secret"}, record)

    def _update(self, organisation: str, operator_id: str, by: Operator | None,
                operation: str, apply: Callable[[sqlite3.Connection, OperatorRecord, str],
                                                Mapping[str, Any]],
                *, now: datetime | None = None) -> RosterChange:
        """Authorise, apply one change to an existing (not removed) operator, re-read it."""
        check_id("organisation", organisation)
        check_id("operator_id", operator_id)
        stamp = to_us(self._now(now))
        with self._tx() as conn:
            self._require_org(conn, organisation)
            actor = self._authorise(conn, organisation, by)
            record = _present(self._get(conn, organisation, operator_id)[0])
            detail = apply(conn, record, actor)
            conn.execute("UPDATE operators SET updated_us = ? WHERE organisation = ? AND "
                         "operator_id = ?", (stamp, organisation, operator_id))
            record, _ = self._get(conn, organisation, operator_id)
        return RosterChange(actor, operation, organisation, operator_id, detail, record)

    def set_enabled(self, organisation: str, operator_id: str, enabled: bool, *,
                    by: Operator | None, now: datetime | None = None) -> RosterChange:
        """Enable or disable an operator (an administrator cannot disable themselves)."""
        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            if not enabled and actor == record.actor:
                raise InvalidArgument("an administrator cannot disable themselves",
                                      reason="SELF_DISABLE")
            conn.execute("UPDATE operators SET enabled = ? WHERE organisation = ? AND "
                         "operator_id = ?", (int(enabled), organisation, operator_id))
            return {"enabled": enabled, "was": record.enabled}
        return self._update(organisation, operator_id, by, "roster_set_enabled", apply,
                            now=now)

    def appoint_administrator(self, organisation: str, operator_id: str, *,
                              by: Operator | None, now: datetime | None = None
                              ) -> RosterChange:
        """Make an enabled operator an administrator of their organisation."""
        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            if not record.enabled:
                raise InvalidArgument(f"operator {record.actor} is disabled",
                                      reason="OPERATOR_DISABLED")
            conn.execute("UPDATE operators SET administrator = 1 WHERE organisation = ? AND "
                         "operator_id = ?", (organisation, operator_id))
            return {"was_administrator": record.administrator}
        return self._update(organisation, operator_id, by, "roster_appoint_administrator",
                            apply, now=now)

    def grant_password_fallback(self, organisation: str, operator_id: str, *, reason: str,
                                expires_at: datetime, password: str,
                                by: Operator | None, now: datetime | None = None) -> RosterChange:
        """Record an approval of password login and set the operator's initial password."""
        if by is None:
            raise NotAuthorized("password fallback needs an administrator's approval",
                                reason="ADMINISTRATOR_REQUIRED")
        why = check_text("reason", reason)
        when = self._now(now)
        until = check_time("expires_at", expires_at)
        if until <= when:
            raise InvalidArgument("the approval must expire in the future",
                                  reason="EXPIRY_IN_PAST")
        if until - when > MAX_APPROVAL:
            raise InvalidArgument(f"an approval lasts at most {MAX_APPROVAL.days} days",
                                  reason="EXPIRY_TOO_FAR")
        check_policy(password, organisation=organisation, operator_id=operator_id)
        encoded = self.hasher.hash(password)

        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            if actor == record.actor:
                raise NotAuthorized("an administrator cannot approve their own password "
                                    "login", reason="SELF_APPROVAL")
            conn.execute("UPDATE operators SET password_hash = ?, approved_by = ?, "
                         "approval_reason = ?, approved_at_us = ?, expires_at_us = ?, "
                         "failed_password_tries = 0, locked = 0 WHERE organisation = ? "
                         "AND operator_id = ?",
                         (encoded, by.operator_id, why, to_us(when), to_us(until),
                          organisation, operator_id))
            return {"approved_by": by.operator_id, "reason": why,
                    "approved_at": when.isoformat(), "expires_at": until.isoformat()}
        return self._update(organisation, operator_id, by, "roster_grant_password_fallback",
                            apply, now=when)

    def unlock(self, organisation: str, operator_id: str, *, by: Operator | None,
               now: datetime | None = None) -> RosterChange:
        """Clear the lock and the wrong-password count."""
        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            conn.execute("UPDATE operators SET locked = 0, failed_password_tries = 0 "
                         "WHERE organisation = ? AND operator_id = ?",
                         (organisation, operator_id))
            return {"was_locked": record.locked,
                    "failed_password_tries": record.failed_password_tries}
        return self._update(organisation, operator_id, by, "roster_unlock", apply, now=now)

    def set_enrolled_fingers(self, organisation: str, operator_id: str,
                             fingers: Iterable[str], *, by: Operator | None,
                             now: datetime | None = None) -> RosterChange:
        """Record which fingers fprintd holds for the operator (after an enrolment)."""
        names = tuple(sorted(set(fingers)))
        if not set(names) <= FINGERS:
            raise InvalidArgument("unknown finger name", reason="INVALID_FINGER",
                                  metadata={"fingers": ",".join(sorted(set(names) - FINGERS))})

        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            conn.execute("UPDATE operators SET enrolled_fingers = ? WHERE organisation = ? "
                         "AND operator_id = ?", (",".join(names), organisation, operator_id))
            return {"fingers": list(names), "was": list(record.enrolled_fingers)}
        return self._update(organisation, operator_id, by, "roster_set_fingers", apply,
                            now=now)

    def remove_operator(self, organisation: str, operator_id: str, *, by: Operator | None,
                        now: datetime | None = None) -> RosterChange:
        """Mark an operator removed (never deleted: the id is never used again). Their
        rights, administrator role, password and approval go at once; the enrolled fingers
        stay listed until `prints_deleted` records that fprintd no longer holds them."""
        when = self._now(now)

        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            if actor == record.actor:
                raise InvalidArgument("an administrator cannot remove themselves",
                                      reason="SELF_REMOVE")
            conn.execute("UPDATE operators SET removed_us = ?, removed_by = ?, enabled = 0, "
                         "administrator = 0, rights = '', locked = 0, "
                         "failed_password_tries = 0, password_hash = NULL, approved_by = NULL, "
                         "approval_reason = NULL, approved_at_us = NULL, expires_at_us = NULL "
                         "WHERE organisation = ? AND operator_id = ?",
                         (to_us(when), by.operator_id if by else "", organisation, operator_id))
            return {"was_administrator": record.administrator,
                    "rights": sorted(r.value for r in record.rights),
                    "fingers": list(record.enrolled_fingers)}
        return self._update(organisation, operator_id, by, "roster_remove_operator", apply,
                            now=when)

    def prints_deleted(self, organisation: str, operator_id: str) -> None:
        """Record that fprintd holds no print of a removed operator any more."""
        with self._tx() as conn:
            conn.execute("UPDATE operators SET enrolled_fingers = '' WHERE organisation = ? "
                         "AND operator_id = ? AND removed_us IS NOT NULL",
                         (organisation, operator_id))

    def removed_with_prints(self) -> list[OperatorRecord]:
        """Removed operators whose prints fprintd may still hold (a deletion to retry)."""
        rows = self._read(f"SELECT {_COLS} FROM operators WHERE removed_us IS NOT NULL "  # noqa: S608
                          "AND enrolled_fingers != '' ORDER BY organisation, operator_id")
        return [_record(r) for r in rows]

    # --- reading -------------------------------------------------------------------

    def get(self, organisation: str, operator_id: str) -> OperatorRecord:
        """One operator; NotFound (OPERATOR_NOT_FOUND) when not on the roster."""
        with self._db.lock:
            return self._get(self._db.conn, organisation, operator_id)[0]

    def list_operators(self, organisation: str = "") -> list[OperatorRecord]:
        """Operators of `organisation` ("" for all), by organisation then id."""
        where, params = ("WHERE organisation = ? ", [organisation]) if organisation else ("", [])
        rows = self._read(f"SELECT {_COLS} FROM operators {where}"  # noqa: S608
                          "ORDER BY organisation, operator_id", params)
        return [_record(r) for r in rows]

    def current(self, operator: Operator) -> Operator:
        """The operator as the roster has it now; NotAuthorized if gone or disabled."""
        try:
            record = self.get(operator.organisation, operator.operator_id)
        except NotFound as exc:
            raise NotAuthorized(f"operator {operator.actor} is no longer on the roster",
                                reason="OPERATOR_NOT_FOUND") from exc
        if record.removed:
            raise NotAuthorized(f"operator {operator.actor} was removed from the roster",
                                reason="OPERATOR_REMOVED")
        if not record.enabled:
            raise NotAuthorized(f"operator {operator.actor} is disabled",
                                reason="OPERATOR_DISABLED")
        return record.to_operator()

    # --- password login --------------------------------------------------------------

    def check_password(self, organisation: str, operator_id: str, password: str,
                       now: datetime | None = None
                       ) -> tuple[OperatorRecord | None, PasswordCheck]:
        """One password attempt, counters persisted; the caller audits and raises.

        Every attempt costs the same: one argon2 verification and one durable write (the
        attempt counter, plus the operator's own counters when there is such an operator),
        so that the time to refuse says nothing about who exists (record None: no such
        operator)."""
        when = self._now(now)
        with self._tx() as conn:
            conn.execute("UPDATE roster_counters SET value = value + 1 "
                         "WHERE name = 'password_attempts'")
            try:
                record, encoded = self._get(conn, organisation, operator_id)
            except NotFound:
                return None, check_password(None, None, password, when, self.hasher)
            check = check_password(record, encoded, password, when, self.hasher)
            new_hash = self.hasher.hash(password) if check.ok and check.rehash else encoded
            conn.execute("UPDATE operators SET failed_password_tries = ?, locked = ?, "
                         "password_hash = ? WHERE organisation = ? AND operator_id = ?",
                         (check.failed_tries, int(check.locked), new_hash, organisation,
                          operator_id))
            record, _ = self._get(conn, organisation, operator_id)
        return record, check

    # --- rights: per operator, and per organisation under the service's catalogue ---------

    def set_rights(self, organisation: str, operator_id: str, rights: Iterable[Right], *,
                   by: Operator | None, now: datetime | None = None) -> RosterChange:
        """Replace an operator's rights (load, delete, diagnose; ADMINISTER comes with
        appointment). Their session sees the change at its next call."""
        granted = check_rights(rights)

        def apply(conn: sqlite3.Connection, record: OperatorRecord, actor: str
                  ) -> Mapping[str, Any]:
            conn.execute("UPDATE operators SET rights = ? WHERE organisation = ? AND "
                         "operator_id = ?", (_rights_text(granted), organisation, operator_id))
            return {"rights": sorted(r.value for r in granted),
                    "was": sorted(r.value for r in record.rights)}
        return self._update(organisation, operator_id, by, "roster_set_rights", apply,
                            now=now)

    def _settings(self, conn: sqlite3.Connection, organisation: str) -> None:
        conn.execute("INSERT OR IGNORE INTO organisation_settings (organisation) VALUES (?)",
                     (organisation,))

    def set_organisation_aps(self, organisation: str, load: Iterable[str],
                             delete: Iterable[str], *, by: Operator | None) -> RosterChange:
        """Restrict the organisation's operators to these APs (ids of the loading service's
        catalogue): `load` they may load, `delete` they may delete. Every preset must stay
        loadable (PRESET_USES_AP otherwise, nothing changed)."""
        check_id("organisation", organisation)
        loads = sorted({check_id("ap_id", a) for a in load})
        deletes = sorted({check_id("ap_id", a) for a in delete})
        with self._tx() as conn:
            self._require_org(conn, organisation)
            actor = self._authorise(conn, organisation, by)
            conn.execute("DELETE FROM organisation_aps WHERE organisation = ?", (organisation,))
            conn.executemany("INSERT INTO organisation_aps (organisation, ap_id, may_load, "
                             "may_delete) VALUES (?, ?, ?, ?)",
                             [(organisation, a, int(a in loads), int(a in deletes))
                              for a in sorted(set(loads) | set(deletes))])
            self._settings(conn, organisation)
            conn.execute("UPDATE organisation_settings SET aps_restricted = 1 "
                         "WHERE organisation = ?", (organisation,))
            self._check_presets(conn, organisation)
        return RosterChange(actor, "roster_set_organisation_aps", organisation, None,
                            {"restricted": True, "load": loads, "delete": deletes})

    def unrestrict_organisation_aps(self, organisation: str, *,
                                    by: Operator | None) -> RosterChange:
        """Let the organisation's operators load and delete every AP of its catalogue."""
        check_id("organisation", organisation)
        with self._tx() as conn:
            self._require_org(conn, organisation)
            actor = self._authorise(conn, organisation, by)
            conn.execute("DELETE FROM organisation_aps WHERE organisation = ?", (organisation,))
            self._settings(conn, organisation)
            conn.execute("UPDATE organisation_settings SET aps_restricted = 0 "
                         "WHERE organisation = ?", (organisation,))
        return RosterChange(actor, "roster_set_organisation_aps", organisation, None,
                            {"restricted": False})

    @staticmethod
    def _check_presets(conn: sqlite3.Connection, organisation: str) -> None:
        """PRESET_USES_AP when a preset names an AP the organisation may not load."""
        restricted = conn.execute(
            "SELECT 1 FROM organisation_settings WHERE organisation = ? AND aps_restricted = 1",
            (organisation,)).fetchone() is not None
        if not restricted:
            return
        orphans = conn.execute(
            "SELECT DISTINCT name, ap_id FROM presets WHERE organisation = ? AND ap_id NOT IN "
            "(SELECT ap_id FROM organisation_aps WHERE organisation = ? AND may_load = 1) "
            "ORDER BY name, ap_id", (organisation, organisation)).fetchall()
        if orphans:
            raise InvalidArgument(
                "a preset may only hold APs the organisation may load: "
                + ", ".join(f"{n} ({a})" for n, a in orphans),
                reason="PRESET_USES_AP",
                metadata={"presets": ",".join(sorted({r[0] for r in orphans}))})

    def set_preset(self, organisation: str, name: str, ap_ids: Sequence[str], *,
                   by: Operator | None, make_default: bool = False) -> RosterChange:
        """Create or replace a preset set (APs in load order; each once, each loadable);
        empty `ap_ids` deletes it (and clears it as the default)."""
        check_id("organisation", organisation)
        check_id("preset", name)
        ids = [check_id("ap_id", a) for a in ap_ids]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("a preset names each AP once", reason="PRESET_DUPLICATE")
        if make_default and not ids:
            raise InvalidArgument("a deleted preset cannot become the default",
                                  reason="PRESET_EMPTY")
        with self._tx() as conn:
            self._require_org(conn, organisation)
            actor = self._authorise(conn, organisation, by)
            conn.execute("DELETE FROM presets WHERE organisation = ? AND name = ?",
                         (organisation, name))
            conn.executemany("INSERT INTO presets VALUES (?, ?, ?, ?)",
                             [(organisation, name, i, a) for i, a in enumerate(ids)])
            self._check_presets(conn, organisation)
            self._settings(conn, organisation)
            was_default = conn.execute(
                "SELECT 1 FROM organisation_settings WHERE organisation = ? AND "
                "default_preset = ?", (organisation, name)).fetchone() is not None
            if make_default or (was_default and not ids):
                conn.execute("UPDATE organisation_settings SET default_preset = ? "
                             "WHERE organisation = ?", (name if ids else None, organisation))
        detail: dict[str, Any] = {"preset": name, "ap_ids": ids}
        if make_default or (was_default and not ids):
            detail["default"] = bool(ids)
        return RosterChange(actor, "roster_set_preset", organisation, None, detail)

    def set_default_preset(self, organisation: str, name: str, *,
                           by: Operator | None) -> RosterChange:
        """The preset loaded when a load names no AP ("" : none)."""
        check_id("organisation", organisation)
        if name:
            check_id("preset", name)
        with self._tx() as conn:
            self._require_org(conn, organisation)
            actor = self._authorise(conn, organisation, by)
            if name and conn.execute("SELECT 1 FROM presets WHERE organisation = ? AND "
                                     "name = ?", (organisation, name)).fetchone() is None:
                raise NotFound(f"organisation {organisation} has no preset {name!r}",
                               reason="PRESET_NOT_FOUND", metadata={"preset": name})
            self._settings(conn, organisation)
            conn.execute("UPDATE organisation_settings SET default_preset = ? "
                         "WHERE organisation = ?", (name or None, organisation))
        return RosterChange(actor, "roster_set_default_preset", organisation, None,
                            {"default_preset": name})

    def rules(self, organisation: str) -> OrganisationRules:
        """What the organisation's administrators allow at this terminal (an organisation
        not on the roster, or never restricted: every AP of its catalogue, no preset)."""
        settings = self._read("SELECT aps_restricted, default_preset FROM "
                              "organisation_settings WHERE organisation = ?", (organisation,))
        restricted, default = (bool(settings[0][0]), settings[0][1] or "") if settings \
            else (False, "")
        aps = self._read("SELECT ap_id, may_load, may_delete FROM organisation_aps "
                         "WHERE organisation = ?", (organisation,))
        return OrganisationRules(
            organisation, restricted,
            loadable=frozenset(a for a, load, _ in aps if load),
            deletable=frozenset(a for a, _, delete in aps if delete),
            presets={n: tuple(ids) for n, ids in self.presets(organisation).items()},
            default_preset=default)

    def presets(self, organisation: str) -> dict[str, list[str]]:
        """The organisation's preset sets: name → AP ids in load order."""
        out: dict[str, list[str]] = {}
        for name, ap_id in self._read("SELECT name, ap_id FROM presets WHERE organisation = ? "
                                      "ORDER BY name, position", (organisation,)):
            out.setdefault(name, []).append(ap_id)
        return out
