"""The daemon's one SQLite layer: `open_database`, per-write `Durability`, migrations."""

from cardapd.storage.sqlite import (
    Database,
    Durability,
    Migration,
    Schema,
    open_database,
    schema_version,
)

__all__ = ["Database", "Durability", "Migration", "Schema", "open_database", "schema_version"]
