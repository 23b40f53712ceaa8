"""What the readers need from the configuration (the daemon builds it from the file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardapd.myna.userid import DEFAULT_RULE, UserIdRule
from cardapd.readers.owner import CardLimits


@dataclass(frozen=True)
class ReaderSettings:
    """The readers' knobs; kept apart from the config file format so they stay testable.

    Frozen: a configuration reload builds new settings and swaps them in whole
    (`Readers.apply_settings`), so an operation never sees half of an old and half of a new
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
    limits: CardLimits = field(default_factory=CardLimits)  # the card deadlines ([card])
    user_id_rules: dict[bytes, UserIdRule] = field(default_factory=dict)
    """How each tap AP's user IDs are accepted (`Config.user_id_rules`)."""

    def rule(self, aid: bytes) -> UserIdRule:
        """The user ID rule of a tap AP (the default: as the card holds it)."""
        return self.user_id_rules.get(aid, DEFAULT_RULE)
