"""Configuration: the TOML files in conf/, parsed once into frozen typed settings.

Public names: ``load``, ``effective_policy``, ``ConfigStore``, ``ConfigError`` and the settings
records. Imports nothing of ours.
"""

from .loader import (
    ConfigError,
    Problem,
    as_table,
    check_value,
    effective_policy,
    load,
    permit_addresses,
)
from .model import (
    AgentSettings,
    AuthSettings,
    ComplianceSettings,
    Config,
    DatabaseSettings,
    DiscoverySettings,
    EffectivePolicy,
    LoggingSettings,
    Overrides,
    PkiSettings,
    PollingPolicy,
    RetentionSettings,
    ServerSettings,
    SupervisionSettings,
)
from .schema import POLLING_KEYS, SECTIONS, Key
from .store import ConfigStore

__all__ = [
    "POLLING_KEYS",
    "SECTIONS",
    "AgentSettings",
    "AuthSettings",
    "ComplianceSettings",
    "Config",
    "ConfigError",
    "ConfigStore",
    "DatabaseSettings",
    "DiscoverySettings",
    "EffectivePolicy",
    "Key",
    "LoggingSettings",
    "Overrides",
    "PkiSettings",
    "PollingPolicy",
    "Problem",
    "RetentionSettings",
    "ServerSettings",
    "SupervisionSettings",
    "as_table",
    "check_value",
    "effective_policy",
    "load",
    "permit_addresses",
]
