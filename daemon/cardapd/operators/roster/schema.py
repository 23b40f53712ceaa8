"""The roster's schema: its forward-only migrations (opened through `cardapd.storage`)."""

from __future__ import annotations

from cardapd.storage import Migration, Schema

ROSTER_SCHEMA = Schema("roster", (
    Migration(1, "roster: organisations, operators, permitted APs, preset sets", (
        """CREATE TABLE organisations (
               organisation TEXT PRIMARY KEY,
               display_name TEXT NOT NULL,
               created_us INTEGER NOT NULL
           ) STRICT""",
        """CREATE TABLE operators (
               organisation TEXT NOT NULL REFERENCES organisations(organisation),
               operator_id TEXT NOT NULL,
               display_name TEXT NOT NULL,
               rights TEXT NOT NULL,
               enabled INTEGER NOT NULL DEFAULT 1,
               administrator INTEGER NOT NULL DEFAULT 0,
               locked INTEGER NOT NULL DEFAULT 0,
               failed_password_tries INTEGER NOT NULL DEFAULT 0,
               enrolled_fingers TEXT NOT NULL DEFAULT '',
               password_hash TEXT,
               approved_by TEXT,
               approval_reason TEXT,
               approved_at_us INTEGER,
               expires_at_us INTEGER,
               created_us INTEGER NOT NULL,
               updated_us INTEGER NOT NULL,
               PRIMARY KEY (organisation, operator_id)
           ) STRICT""",
        """CREATE TABLE organisation_aps (
               organisation TEXT NOT NULL REFERENCES organisations(organisation),
               ap_id TEXT NOT NULL,
               PRIMARY KEY (organisation, ap_id)
           ) STRICT""",
        """CREATE TABLE presets (
               organisation TEXT NOT NULL REFERENCES organisations(organisation),
               name TEXT NOT NULL,
               position INTEGER NOT NULL,
               ap_id TEXT NOT NULL,
               PRIMARY KEY (organisation, name, position)
           ) STRICT""",
    )),
    Migration(2, "roster: operators are removed, never deleted (ids never reused); a counter "
                 "every password attempt writes", (
        "ALTER TABLE operators ADD COLUMN removed_us INTEGER",
        "ALTER TABLE operators ADD COLUMN removed_by TEXT",
        """CREATE TRIGGER operators_never_deleted BEFORE DELETE ON operators
           BEGIN SELECT RAISE(ABORT, 'operators are never deleted: they are marked removed,
               so that an operator id is never used twice'); END""",
        """CREATE TABLE roster_counters (
               name TEXT PRIMARY KEY,
               value INTEGER NOT NULL
           ) STRICT""",
        "INSERT INTO roster_counters VALUES ('password_attempts', 0)",
    )),
    Migration(3, "roster: per organisation, the APs its operators may load and delete, "
                 "and its default preset", (
        "ALTER TABLE organisation_aps ADD COLUMN may_load INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE organisation_aps ADD COLUMN may_delete INTEGER NOT NULL DEFAULT 1",
        """CREATE TABLE organisation_settings (
               organisation TEXT PRIMARY KEY REFERENCES organisations(organisation),
               aps_restricted INTEGER NOT NULL DEFAULT 0,
               default_preset TEXT
           ) STRICT""",
        # An organisation whose permitted APs were set (version 1) keeps exactly those.
        """INSERT INTO organisation_settings (organisation, aps_restricted)
           SELECT DISTINCT organisation, 1 FROM organisation_aps""",
    )),
), foreign_keys=True)
