"""cardapd.toml: one schema (`schema`), read and checked by `load_config`, reloaded by
`plan_reload`, documented by `reference` (docs/configuration.md)."""

from cardapd.config.load import load_config
from cardapd.config.reload import ReloadPlan, changed_keys, needs_restart, plan_reload
from cardapd.config.schema import (
    ApKind,
    AuditConfig,
    Config,
    DaemonConfig,
    DiagnoseConfig,
    LoadingConfig,
    MetricsConfig,
    OperatorsConfig,
    PcscConfig,
    PinConfig,
    PinMode,
    ReadApConfig,
    RevocationConfig,
    RoleSocket,
    SocketConfig,
    SocketsConfig,
    StalePolicy,
    TapConfig,
)
from cardapd.config.secrets import Secret, read_secret_file

__all__ = [
    "ApKind", "AuditConfig", "Config", "DaemonConfig", "DiagnoseConfig", "LoadingConfig",
    "MetricsConfig", "OperatorsConfig", "PcscConfig", "PinConfig", "PinMode", "ReadApConfig",
    "ReloadPlan", "RevocationConfig", "RoleSocket", "Secret", "SocketConfig",
    "SocketsConfig", "StalePolicy", "TapConfig", "changed_keys", "load_config",
    "needs_restart", "plan_reload", "read_secret_file",
]
