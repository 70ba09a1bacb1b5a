"""/metrics in the Prometheus text format (R-9.4)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from storage import Database
from storage.audit import head_id as audit_head_id
from storage.audit import stats as audit_stats
from storage.outbox import OutboxStats, outbox_stats

from .authz import Action, require
from .handle import SystemHandle
from .relay import Relay
from .services import principal


def _number(value: float) -> str:
    """Full precision (``:g`` kept 6 digits: a Unix time or a counter past a million lost its
    last digits)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {_number(value)}"
    return f"{name} {_number(value)}"


def render(
    metrics: dict[str, Any],
    relay: Relay,
    outbox: OutboxStats | None = None,
    audit_head: int | None = None,
) -> str:
    out: list[str] = []

    def family(name: str, kind: str, doc: str) -> None:
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {kind}")

    family("patchmgr_actors", "gauge", "Host actors by phase.")
    for phase, count in sorted(metrics.get("actors_by_phase", {}).items()):
        out.append(_line("patchmgr_actors", count, {"phase": phase}))
    family("patchmgr_hosts", "gauge", "Hosts by health state.")
    for health, count in sorted(metrics.get("hosts_by_health", {}).items()):
        out.append(_line("patchmgr_hosts", count, {"health": health}))
    family("patchmgr_polls_total", "counter", "Agent polls by outcome.")
    out.append(_line("patchmgr_polls_total", metrics.get("polls_ok", 0), {"outcome": "ok"}))
    out.append(_line("patchmgr_polls_total", metrics.get("polls_failed", 0), {"outcome": "failed"}))
    family("patchmgr_poll_seconds", "histogram", "Duration of one agent poll.")
    cumulative = 0
    for bound, count in metrics.get("poll_buckets", []):
        cumulative += count
        out.append(_line("patchmgr_poll_seconds_bucket", cumulative, {"le": f"{bound:g}"}))
    out.append(
        _line("patchmgr_poll_seconds_bucket", metrics.get("polls_observed", 0), {"le": "+Inf"})
    )
    out.append(_line("patchmgr_poll_seconds_sum", metrics.get("poll_seconds_sum", 0.0)))
    out.append(_line("patchmgr_poll_seconds_count", metrics.get("polls_observed", 0)))
    for name, kind, help_text, value in (
        ("patchmgr_relay_subscribers", "gauge", "Browsers connected to the live relay.",
         relay.connected),
        ("patchmgr_relay_dropped_total", "counter", "Relay clients dropped for lagging.",
         relay.dropped),
        ("patchmgr_relay_resyncs_total", "counter",
         "Fresh relay snapshots sent because a burst overflowed a socket's subscription.",
         relay.resyncs),
        ("patchmgr_relay_snapshots_total", "counter",
         "Relay snapshots sent (first and resyncs).", relay.snapshots_sent),
        ("patchmgr_relay_snapshot_pages_total", "counter", "Relay snapshot pages sent.",
         relay.snapshot_pages),
        ("patchmgr_relay_snapshot_pages_reused_total", "counter",
         "Relay snapshot pages sent as serialised for an earlier socket.", relay.pages_reused),
        ("patchmgr_relay_serialised_total", "counter", "Host states serialised by the relay.",
         relay.serialised),
    ):  # fmt: skip
        family(name, kind, help_text)
        out.append(_line(name, value))
    family("patchmgr_broadcast_dropped_total", "counter", "Slow subscribers dropped.")
    out.append(_line("patchmgr_broadcast_dropped_total", metrics.get("dropped_subscribers", 0)))
    family(
        "patchmgr_certificate_expiry_seconds",
        "gauge",
        "Seconds until the manager's certificates and the CRL expire (renewed at 2/3 of life).",
    )
    for kind, seconds in sorted(metrics.get("certificate_expiry_s", {}).items()):
        out.append(_line("patchmgr_certificate_expiry_seconds", round(seconds), {"kind": kind}))
    family(
        "patchmgr_agent_certificates_refused_total",
        "counter",
        "Agent handshakes refused: revoked certificate or not issued as an agent certificate.",
    )
    out.append(
        _line("patchmgr_agent_certificates_refused_total",
              metrics.get("agent_certificates_refused", 0))
    )  # fmt: skip
    retention = metrics.get("retention")
    if retention is not None:
        family(
            "patchmgr_retention_deleted_rows_total",
            "counter",
            "Rows deleted by the daily retention run, per table.",
        )
        for table, n in sorted(retention["deleted_total"].items()):
            out.append(_line("patchmgr_retention_deleted_rows_total", n, {"table": table}))
        family("patchmgr_retention_runs_total", "counter", "Retention runs by outcome.")
        out.append(_line("patchmgr_retention_runs_total", retention["runs"], {"outcome": "ok"}))
        out.append(
            _line("patchmgr_retention_runs_total", retention["failures"], {"outcome": "failed"})
        )
        family(
            "patchmgr_retention_last_run_timestamp_seconds",
            "gauge",
            "When the last retention run finished (Unix time; 0 = none yet).",
        )
        out.append(
            _line("patchmgr_retention_last_run_timestamp_seconds", retention["last_run_ts"] or 0)
        )
        family(
            "patchmgr_retention_last_run_seconds",
            "gauge",
            "Duration of the last retention run in this process.",
        )
        out.append(_line("patchmgr_retention_last_run_seconds", retention["last_duration_s"] or 0))
    audit = audit_stats
    family("patchmgr_audit_writes_total", "counter", "Audit entries written, by outcome.")
    out.append(_line("patchmgr_audit_writes_total", audit.written, {"outcome": "ok"}))
    out.append(_line("patchmgr_audit_writes_total", audit.failed, {"outcome": "failed"}))
    family("patchmgr_audit_verifications_total", "counter", "Audit chain checks, by result.")
    out.append(_line("patchmgr_audit_verifications_total", audit.verified_ok, {"result": "ok"}))
    out.append(
        _line("patchmgr_audit_verifications_total", audit.verified_broken, {"result": "broken"})
    )
    family("patchmgr_audit_pruned_total", "counter", "Audit entries pruned (after a checkpoint).")
    out.append(_line("patchmgr_audit_pruned_total", audit.pruned))
    if audit_head is not None:
        family(
            "patchmgr_audit_head_id",
            "gauge",
            "Id of the newest audit entry ever written: alert when it goes backwards.",
        )
        out.append(_line("patchmgr_audit_head_id", audit_head))
    if outbox is not None:
        family(
            "patchmgr_notification_outbox_depth",
            "gauge",
            "Notifications waiting: events not yet digested, messages not yet sent.",
        )
        out.append(
            _line("patchmgr_notification_outbox_depth", outbox.pending_events, {"queue": "events"})
        )
        out.append(
            _line(
                "patchmgr_notification_outbox_depth", outbox.pending_messages, {"queue": "messages"}
            )
        )
        family(
            "patchmgr_notification_messages",
            "gauge",
            "E-mail messages kept in the (bounded) outbox, by final state.",
        )
        out.append(_line("patchmgr_notification_messages", outbox.sent, {"state": "sent"}))
        out.append(_line("patchmgr_notification_messages", outbox.failed, {"state": "failed"}))
        family(
            "patchmgr_notification_dropped_total",
            "counter",
            "Notifications dropped (oldest first) because the outbox was full.",
        )
        out.append(
            _line("patchmgr_notification_dropped_total", outbox.dropped_events, {"queue": "events"})
        )
        out.append(
            _line(
                "patchmgr_notification_dropped_total",
                outbox.dropped_messages,
                {"queue": "messages"},
            )
        )
    return "\n".join(out) + "\n"


def endpoint(handle: SystemHandle, relay: Relay, db: Database | None = None) -> Any:
    async def metrics(request: Request) -> Response:
        """Fleet-wide figures: only for roles that may observe the system (admins)."""
        require(principal(request), Action.OBSERVE)
        outbox = await db.run(outbox_stats) if db is not None else None
        head = await db.run(audit_head_id) if db is not None else None
        return PlainTextResponse(
            render(handle.metrics(), relay, outbox, head), media_type="text/plain; version=0.0.4"
        )

    return metrics
