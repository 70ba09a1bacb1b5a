"""The auditor evidence pack: one ZIP for a date range and scope with the compliance summary
and trend, remediation latency per severity against the SLA, active and expired waivers, failed
and cancelled host jobs with their errors, the hosts whose state is unknown, the compliance PDF,
and ``manifest.json`` listing every file with its SHA-256. (The audit extract joins it when the
audit trail exists.) Synchronous: run it in a worker thread."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

from storage.reports import ReportFilter

from .compliance import ComplianceRules
from .csv_out import cell
from .model import ComplianceReport, HistoryReport
from .pdf import compliance_pdf


def _csv(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(cell(v) for v in row)  # the report CSVs' escaping of formulas
    return buffer.getvalue().encode()


def evidence_files(
    compliance: ComplianceReport, history: HistoryReport, f: ReportFilter, rules: ComplianceRules
) -> dict[str, bytes]:
    as_of = compliance.as_of
    s = compliance.summary
    summary = {
        "as_of": as_of.isoformat(),
        "filter": {"since": str(f.since or ""), "until": str(f.until or ""), "group": f.group},
        "about": {
            "generated_by": compliance.about.generated_by,
            "scope": compliance.about.scope,
            "filters": compliance.about.filters,
        },
        "hosts": s.hosts,
        "compliant": s.compliant,
        "compliant_with_waivers": s.waived_hosts,
        "noncompliant": s.noncompliant,
        "unknown": s.unknown,
        "percent": s.percent,  # of hosts with known state
        "percent_of_all": s.percent_of_all,  # unknown hosts count against it
        "rules": {
            "sla_days": dict(rules.sla_days),
            "min_severity": rules.min_severity,
            "freshness_factor": rules.freshness_factor,
        },
    }
    files = {
        "compliance-summary.json": json.dumps(summary, indent=2).encode(),
        "compliance-trend.csv": _csv(
            ("day", "hosts", "compliant", "noncompliant", "unknown", "waived", "backfilled"),
            [
                (
                    p.day.isoformat(),
                    p.hosts,
                    p.compliant,
                    p.noncompliant,
                    p.unknown,
                    p.waived,
                    p.backfilled,
                )
                for p in compliance.trend
            ],  # fmt: skip
        ),
        "remediation-latency.csv": _csv(
            ("severity", "resolved", "mean_days", "sla_days", "within_sla"),
            [
                (
                    r.severity,
                    r.resolved,
                    "" if r.mean_hours is None else round(r.mean_hours / 24, 2),
                    history.sla_days.get(r.severity, 0),
                    ""
                    if r.mean_hours is None
                    else r.mean_hours / 24 <= history.sla_days.get(r.severity, 0),
                )  # fmt: skip
                for r in history.remediation
            ],
        ),
        "waivers.csv": _csv(
            (
                "id",
                "host",
                "package",
                "cve",
                "owner",
                "reason",
                "expires_at",
                "state",
                "created_by",
                "created_at",
                "revoked_by",
                "revoked_at",
            ),
            [
                (
                    w.id,
                    w.host,
                    w.package,
                    w.cve,
                    w.owner,
                    w.reason,
                    w.expires_at,
                    "revoked" if w.revoked_at else "expired" if w.expires_at <= as_of else "active",
                    w.created_by,
                    w.created_at,
                    w.revoked_by,
                    w.revoked_at or "",
                )
                for w in compliance.waivers
            ],
        ),  # fmt: skip
        "failed-jobs.csv": _csv(
            (
                "job_id",
                "kind",
                "created_by",
                "host",
                "outcome",
                "finished_at",
                "error_code",
                "error_message",
            ),
            [
                (
                    r.job_id,
                    r.kind,
                    r.created_by,
                    r.host,
                    r.state,
                    r.finished_at or "",
                    r.error_code,
                    r.error_message,
                )
                for r in history.rows
                if r.state in ("failed", "cancelled") or r.kind == "rollback"
            ],
        ),  # fmt: skip
        "unknown-hosts.csv": _csv(
            ("host_id", "host", "groups", "reason", "last_patch_poll_at"),
            [
                (
                    h.host_id,
                    h.display_name or h.name,
                    " ".join(h.groups),
                    h.reason_text,
                    h.last_patch_poll_at or "",
                )
                for h in compliance.hosts
                if h.status == "unknown"
            ],
        ),  # fmt: skip
        "compliance-report.pdf": compliance_pdf(compliance),
    }
    return files


def evidence_pack(
    compliance: ComplianceReport, history: HistoryReport, f: ReportFilter, rules: ComplianceRules
) -> bytes:
    files = evidence_files(compliance, history, f, rules)
    manifest = {
        "generated_at": compliance.as_of.isoformat(),
        "files": [
            {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        ],
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as pack:
        for name, data in files.items():
            pack.writestr(name, data)
        pack.writestr("manifest.json", json.dumps(manifest, indent=2))
    return out.getvalue()
