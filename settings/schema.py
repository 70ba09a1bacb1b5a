"""The one description of every configuration key: type, default, range and meaning.

The loader validates against it, ``check-config`` prints from it and a test compares it with the
configuration reference in README.md, so a key cannot exist in one place and not the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ValueKind = Literal["int", "float", "bool", "str", "str_list", "int_list"]


@dataclass(frozen=True)
class Key:
    """One configuration key.

    ``minimum``/``maximum`` bound numbers (and every element of a number list); ``choices``
    restricts strings; ``min_items``/``max_items`` bound lists.
    """

    name: str
    kind: ValueKind
    default: object
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    min_items: int = 0
    max_items: int = 1000


# Keys a group or a host may override in conf/hosts.toml; also settable globally under [polling].
POLLING_KEYS: tuple[Key, ...] = (
    Key("health_interval_s", "int", 300, "Seconds between health + system/info polls.", 10, 86_400),
    Key("patch_interval_s", "int", 1800, "Seconds between patch + package polls.", 60, 604_800),
    Key("request_timeout_s", "float", 30.0, "Deadline for one agent request.", 1, 600),
    Key("connect_timeout_s", "float", 10.0, "Deadline for TCP + TLS connect.", 0.5, 120),
    Key(
        "backoff_s",
        "int_list",
        [60, 300, 1800],
        "Delays between retries after a failed poll; one retry per entry (R-3.2).",
        1,
        1800,
        min_items=1,
        max_items=10,
    ),
    Key("jitter_ratio", "float", 0.1, "Random spread of backoff delays (0 = none).", 0, 0.5),
    Key("max_connections", "int", 2, "Connections the manager opens to one agent.", 1, 8),
    Key("paused", "bool", False, "A paused host's actor is parked: no polls, no jobs."),
)

SECTIONS: dict[str, tuple[Key, ...]] = {
    "server": (
        Key("bind", "str", "127.0.0.1:8443", "Address:port of the web UI and JSON API."),
        Key("tls", "bool", True, "Serve HTTPS (TLS 1.3 only). false only behind a TLS proxy."),
        Key(
            "hostnames",
            "str_list",
            ["localhost"],
            "DNS names put in the web certificate's SAN.",
            max_items=50,
        ),
        Key(
            "ip_addresses",
            "str_list",
            ["127.0.0.1"],
            "IP addresses put in the web certificate's SAN.",
            max_items=50,
        ),
        Key("graceful_timeout_s", "float", 5.0, "Time in-flight requests get at shutdown.", 0, 120),
        Key(
            "request_timeout_s",
            "float",
            60.0,
            "A request body must be complete this long after its head, else the connection closes.",
            1,
            3600,
        ),
        Key(
            "max_connections",
            "int",
            1000,
            "Client connections served at once; more are closed at accept.",
            10,
            100_000,
        ),
        Key(
            "max_body_bytes",
            "int",
            1_048_576,
            "Largest request body accepted; larger ones get 413 before they are read.",
            1024,
            1_073_741_824,
        ),
    ),
    "database": (
        Key("url", "str", "", "PostgreSQL URL; empty = the embedded cluster in the data dir."),
        Key("url_env", "str", "", "Name of an environment variable holding the URL (secrets)."),
        Key("pool_size", "int", 8, "Connections in the pool (and worker threads).", 1, 64),
        Key(
            "web_pool_size",
            "int",
            4,
            "The web's own pool (and worker threads): pages never wait behind the actors.",
            1,
            64,
        ),
        Key("statement_timeout_s", "int", 30, "Server-side statement_timeout.", 1, 3600),
        Key(
            "binaries",
            "str",
            "embedded",
            "Embedded cluster binaries: the bundled PostgreSQL 18 or the system's.",
            choices=("embedded", "system"),
        ),
        Key("system_bin_dir", "str", "", "Directory of initdb/postgres when binaries = system."),
    ),
    "logging": (
        Key("level", "str", "info", "Log level.", choices=("debug", "info", "warning", "error")),
        Key(
            "format",
            "str",
            "auto",
            "json, text, or auto (text on a terminal).",
            choices=("json", "text", "auto"),
        ),
    ),
    "agents": (
        Key("port", "int", 12443, "Port the agents listen on.", 1, 65535),
        Key(
            "allow_addresses",
            "str_list",
            [],
            "CIDRs agents may have although refused by default (loopback, link-local, ...).",
            max_items=100,
        ),
        Key(
            "allow_ports",
            "int_list",
            [],
            "Agent ports accepted besides agents.port.",
            1,
            65535,
            max_items=100,
        ),
        Key("resolve_timeout_s", "float", 5.0, "Deadline for resolving a host name.", 0.1, 60),
        Key(
            "max_new_connections",
            "int",
            0,
            "Agent connections being opened (TLS handshakes) at once, fleet-wide; 0 = 16 per CPU.",
            0,
            100_000,
        ),
    ),
    "polling": POLLING_KEYS,
    "supervision": (
        Key("max_crashes", "int", 5, "Crashes within window_s before a host is failed.", 1, 100),
        Key("window_s", "int", 300, "Window for counting actor crashes.", 10, 86_400),
        Key("restart_min_s", "float", 1.0, "First restart delay after a crash.", 0.01, 600),
        Key("restart_max_s", "float", 60.0, "Cap on the restart delay.", 0.01, 3600),
        Key(
            "failed_retry_s",
            "float",
            600.0,
            "A failed host's actor is started again after this long.",
            1,
            86_400,
        ),
    ),
    "discovery": (
        Key("min_prefix_len", "int", 20, "Largest range a scan accepts (/20 = 4096).", 16, 32),
        Key("max_concurrent_scans", "int", 2, "Scans running at once; more get 429.", 1, 16),
        Key("concurrency", "int", 512, "Probes in flight at once.", 1, 4096),
        Key("connect_timeout_s", "float", 1.5, "TCP connect deadline per address.", 0.1, 30),
    ),
    "retention": (
        Key(
            "operational_days",
            "int",
            30,
            "Days of operational history kept; older rows are pruned daily.",
            1,
            3650,
        ),
        Key(
            "audit_days",
            "int",
            180,
            "Days of audit log kept; older entries pruned daily behind a signed checkpoint.",
            30,
            3650,
        ),
    ),
    "compliance": (
        Key("critical_sla_days", "int", 7, "Days a critical patch may stay pending.", 0, 3650),
        Key("high_sla_days", "int", 30, "Days a high patch may stay pending.", 0, 3650),
        Key("medium_sla_days", "int", 90, "Days a medium patch may stay pending.", 0, 3650),
        Key("low_sla_days", "int", 180, "Days a low patch may stay pending.", 0, 3650),
        Key(
            "min_severity",
            "str",
            "low",
            "Lowest severity that counts against compliance.",
            choices=("critical", "high", "medium", "low"),
        ),
        Key(
            "freshness_factor",
            "float",
            2.0,
            "Patch data older than this many patch intervals makes a host unknown.",
            1,
            100,
        ),
        Key("waiver_warning_days", "int", 14, "Waivers expiring this soon are shown.", 1, 365),
        Key(
            "backfill_days",
            "int",
            90,
            "Days of snapshots reconstructed from patch history on the first run.",
            0,
            3650,
        ),
    ),
    "auth": (
        Key("password_min_length", "int", 12, "Shortest password accepted.", 8, 256),
        Key(
            "password_min_score",
            "int",
            3,
            "Lowest zxcvbn guessability score (0-4) a new password needs.",
            0,
            4,
        ),
        Key(
            "lockout_threshold", "int", 5, "Wrong passwords in a row that lock an account.", 1, 100
        ),
        Key("lockout_minutes", "int", 30, "How long a locked account stays locked.", 1, 10_080),
        Key(
            "throttle_max_s",
            "float",
            30.0,
            "Cap on the delay one source address waits after repeated failed logins.",
            0,
            600,
        ),
        Key("hash_concurrency", "int", 2, "Argon2 password hashes computed at once.", 1, 16),
        Key(
            "hash_queue",
            "int",
            16,
            "Password checks that may wait for a hashing slot; more get 429.",
            0,
            1024,
        ),
        Key("session_hours", "int", 12, "Longest a browser session lives.", 1, 720),
        Key("idle_minutes", "int", 60, "A session unused this long ends.", 5, 1440),
        Key(
            "operators_see_ungrouped",
            "bool",
            False,
            "Operators also see and act on hosts that belong to no group (read at start).",
        ),
        Key("token_max_days", "int", 90, "Longest lifetime of an API token, in days.", 1, 3650),
        Key(
            "reauth_reboot_hosts",
            "int",
            10,
            "A reboot-now job for more hosts than this needs a second factor within 5 minutes.",
            0,
            100_000,
        ),
        Key(
            "webauthn_rp_id",
            "str",
            "",
            "WebAuthn relying-party id (a host name); empty: the host the browser addressed.",
        ),
        Key(
            "webauthn_origin",
            "str",
            "",
            "WebAuthn origin, e.g. https://pm.example.com; empty: the origin the browser used.",
        ),
    ),
    "pki": (
        Key(
            "renew_ratio",
            "float",
            0.667,
            "Share of their lifetime after which the manager's certificates are renewed.",
            0.5,
            0.9,
        ),
        Key(
            "crl_interval_s",
            "int",
            86_400,
            "Seconds between CRL re-signings (each CRL is valid 7 days).",
            3600,
            172_800,
        ),
        Key("enrol_token_hours", "int", 24, "Hours an enrolment request stays valid.", 1, 168),
        Key(
            "enrol_rate_s",
            "float",
            60.0,
            "Seconds between two enrolment requests from one source address.",
            0,
            3600,
        ),
        Key(
            "auto_approve_cidrs",
            "str_list",
            [],
            "Enrolment requests sent from the agent IP they claim, in one of these CIDRs, are "
            "approved without an admin.",
            max_items=100,
        ),
        Key(
            "bootstrap_token_env",
            "str",
            "",
            "Environment variable holding a token auto-approved requests must also carry "
            "(bootstrap_token); empty: the CIDR alone.",
        ),
        Key("auto_approve_group", "str", "", "Group of auto-approved hosts (empty: none)."),
        Key(
            "ca_passphrase_env",
            "str",
            "",
            "Environment variable holding the root key's passphrase (empty: key not encrypted).",
        ),
        Key(
            "ca_passphrase_file",
            "str",
            "",
            "File holding the root key's passphrase (used when ca_passphrase_env is empty).",
        ),
    ),
}

POLLING_KEY_NAMES = frozenset(k.name for k in POLLING_KEYS)
