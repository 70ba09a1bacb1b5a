"""Frozen, typed settings built from the TOML files. Field names mirror ``settings.schema``."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    bind: str
    tls: bool
    hostnames: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    graceful_timeout_s: float
    request_timeout_s: float
    max_connections: int
    max_body_bytes: int


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    url_env: str
    pool_size: int
    web_pool_size: int
    statement_timeout_s: int
    binaries: str
    system_bin_dir: str


@dataclass(frozen=True)
class LoggingSettings:
    level: str
    format: str


@dataclass(frozen=True)
class AgentSettings:
    port: int
    allow_addresses: tuple[str, ...]
    allow_ports: tuple[int, ...]
    resolve_timeout_s: float
    max_new_connections: int


@dataclass(frozen=True)
class PollingPolicy:
    """How one host is polled. Built by merging defaults, global, group and host values."""

    health_interval_s: int
    patch_interval_s: int
    request_timeout_s: float
    connect_timeout_s: float
    backoff_s: tuple[int, ...]
    jitter_ratio: float
    max_connections: int
    paused: bool


@dataclass(frozen=True)
class SupervisionSettings:
    max_crashes: int
    window_s: int
    restart_min_s: float
    restart_max_s: float
    failed_retry_s: float


@dataclass(frozen=True)
class DiscoverySettings:
    min_prefix_len: int
    max_concurrent_scans: int
    concurrency: int
    connect_timeout_s: float


@dataclass(frozen=True)
class RetentionSettings:
    operational_days: int
    audit_days: int


@dataclass(frozen=True)
class ComplianceSettings:
    critical_sla_days: int = 7
    high_sla_days: int = 30
    medium_sla_days: int = 90
    low_sla_days: int = 180
    min_severity: str = "low"
    freshness_factor: float = 2.0
    waiver_warning_days: int = 14
    backfill_days: int = 90


@dataclass(frozen=True)
class PkiSettings:
    renew_ratio: float = 0.667
    crl_interval_s: int = 86_400
    enrol_token_hours: int = 24
    enrol_rate_s: float = 60.0
    auto_approve_cidrs: tuple[str, ...] = ()
    bootstrap_token_env: str = ""
    auto_approve_group: str = ""
    ca_passphrase_env: str = ""
    ca_passphrase_file: str = ""


@dataclass(frozen=True)
class AuthSettings:
    password_min_length: int = 12
    password_min_score: int = 3
    lockout_threshold: int = 5
    lockout_minutes: int = 30
    throttle_max_s: float = 30.0
    hash_concurrency: int = 2
    hash_queue: int = 16
    session_hours: int = 12
    idle_minutes: int = 60
    operators_see_ungrouped: bool = False
    token_max_days: int = 90
    reauth_reboot_hosts: int = 10
    webauthn_rp_id: str = ""
    webauthn_origin: str = ""


class Source(enum.Enum):
    """Where an effective polling value came from (R-1.3)."""

    DEFAULT = "default"
    GLOBAL = "global"
    GROUP = "group"
    HOST = "host"


@dataclass(frozen=True)
class EffectivePolicy:
    """A host's polling policy plus, per key, where the value came from.

    ``origins`` maps a key to a label such as ``"default"``, ``"global"``, ``"group:web"`` or
    ``"host"``.
    """

    policy: PollingPolicy
    origins: Mapping[str, str]


@dataclass(frozen=True)
class Overrides:
    """Polling overrides from conf/hosts.toml: raw validated values per group and per host."""

    groups: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    hosts: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole configuration in force. Replaced as a unit on reload, never mutated."""

    server: ServerSettings
    database: DatabaseSettings
    logging: LoggingSettings
    agents: AgentSettings
    polling: PollingPolicy
    supervision: SupervisionSettings
    discovery: DiscoverySettings
    retention: RetentionSettings
    # Values set explicitly under [polling] (to tell "global" from "default").
    polling_explicit: Mapping[str, object]
    overrides: Overrides
    files: tuple[Path, ...]
    compliance: ComplianceSettings = field(default_factory=ComplianceSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    pki: PkiSettings = field(default_factory=PkiSettings)
