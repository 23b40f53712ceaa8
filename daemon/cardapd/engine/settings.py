"""What the engine needs from the configuration (main builds it from the TOML file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """Engine knobs; kept apart from the config file format so the engine stays testable."""

    type_c_aids: tuple[bytes, ...] = ()
    read_on_insert: bool = True
    readers_include: tuple[str, ...] = ()
    readers_exclude: tuple[str, ...] = ()
    reconnect_interval_s: float = 1.0
    probe_type_c: bool = True
    event_queue_size: int = 256
