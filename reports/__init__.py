"""Compliance and reports (R-6): the one compliance function, the report queries over storage
records, their CSV / PDF / SVG renderings, daily snapshots and the auditor evidence pack.
Reads ``storage`` only, never the live actors."""

from .compliance import (
    SEVERITIES,
    Assessment,
    ComplianceRules,
    HostFacts,
    PendingPatch,
    Status,
    Waiver,
    assess,
)
from .model import (
    ComplianceReport,
    Context,
    ExposureReport,
    HistoryReport,
    HostCompliance,
    RebootReport,
    Summary,
    compliance_pages,
    compliance_report,
    exposure_pages,
    exposure_report,
    history_pages,
    history_report,
    reboot_pages,
    reboot_report,
)
from .snapshots import backfill, take_snapshot

__all__ = [
    "SEVERITIES",
    "Assessment",
    "ComplianceReport",
    "ComplianceRules",
    "Context",
    "ExposureReport",
    "HistoryReport",
    "HostCompliance",
    "HostFacts",
    "PendingPatch",
    "RebootReport",
    "Status",
    "Summary",
    "Waiver",
    "assess",
    "backfill",
    "compliance_pages",
    "compliance_report",
    "exposure_pages",
    "exposure_report",
    "history_pages",
    "history_report",
    "reboot_pages",
    "reboot_report",
    "take_snapshot",
]
