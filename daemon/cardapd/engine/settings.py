"""What the engine needs from the configuration (main builds it from the TOML file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """Engine knobs; kept apart from the config file format so the engine stays testable.

    Frozen: a configuration reload builds new settings and swaps them in whole
    (`Engine.apply_settings`), so an operation never sees half of an old and half of a new
    configuration. `reconnect_interval_s`, `event_queue_size` and `hotplug` are read at
    start only.
    """

    type_c_aids: tuple[bytes, ...] = ()
    read_on_insert: bool = True
    readers_include: tuple[str, ...] = ()
    readers_exclude: tuple[str, ...] = ()
    reconnect_interval_s: float = 1.0
    probe_type_c: bool = True
    event_queue_size: int = 256
    hotplug: str = "pnp"  # "udev": also follow USB readers through udev (read at start)
