"""CSV renderings of the reports, streamed: each takes the report's page iterator and yields
text chunks (one per page of rows), so a 10,000-host CSV is never held whole."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterable, Sequence

from storage.reports import HistoryRow

from .model import ExposureItem, HostCompliance, RebootItem

_FORMULA = ("=", "+", "@", "|", "-", "\t", "\r")  # the first four also behind blanks


def cell(value: object) -> object:
    """One CSV value: instants in UTC ISO form, tuples space-separated, and text a spreadsheet
    would evaluate as a formula (=, +, -, @, tab, CR, or |, also behind leading blanks and
    line breaks) prefixed with '."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, str) and (
        value[:1] in _FORMULA or value.lstrip(" \t\r\n")[:1] in _FORMULA[:4]
    ):
        return "'" + value  # a spreadsheet must not evaluate a host-supplied formula
    return value


def _chunk(rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([cell(v) for v in row] for row in rows)
    return buffer.getvalue()


COMPLIANCE_HEADER = ("host_id", "host", "address", "groups", "status", "label", "reason",
                     "past_sla", "waived", "pending", "last_patch_poll_at")  # fmt: skip
HISTORY_HEADER = ("job_id", "kind", "created_by", "host_id", "host", "address", "outcome",
                  "started_at", "finished_at", "duration_s", "what", "error_code",
                  "error_message")  # fmt: skip
EXPOSURE_HEADER = ("host_id", "host", "address", "package", "severity", "cve_ids",
                   "first_seen_at", "age_days", "waived")  # fmt: skip
REBOOT_HEADER = ("host_id", "host", "address", "groups", "health", "last_boot_at",
                 "pending_patches")  # fmt: skip


async def compliance_csv(pages: AsyncIterator[list[HostCompliance]]) -> AsyncIterator[str]:
    yield _chunk([COMPLIANCE_HEADER])
    async for page in pages:
        yield _chunk(
            (
                h.host_id,
                h.display_name or h.name,
                h.address,
                h.groups,
                h.status,
                h.label,
                h.reason_text,
                h.breaches,
                h.waived,
                h.pending,
                h.last_patch_poll_at,
            )  # fmt: skip
            for h in page
        )


async def history_csv(pages: AsyncIterator[list[HistoryRow]]) -> AsyncIterator[str]:
    yield _chunk([HISTORY_HEADER])
    async for page in pages:
        yield _chunk(
            (
                r.job_id,
                r.kind,
                r.created_by,
                r.host_id,
                r.host,
                r.address,
                r.state,
                r.started_at,
                r.finished_at,
                "" if r.duration_s is None else round(r.duration_s, 1),
                r.packages,
                r.error_code,
                r.error_message,
            )  # fmt: skip
            for r in page
        )


async def exposure_csv(pages: AsyncIterator[list[ExposureItem]]) -> AsyncIterator[str]:
    yield _chunk([EXPOSURE_HEADER])
    async for page in pages:
        yield _chunk(
            (
                i.host_id,
                i.host,
                i.address,
                i.package,
                i.severity,
                i.cve_ids,
                i.first_seen_at,
                i.age_days,
                "yes" if i.waived else "no",
            )  # fmt: skip
            for i in page
        )


async def reboot_csv(pages: AsyncIterator[list[RebootItem]]) -> AsyncIterator[str]:
    yield _chunk([REBOOT_HEADER])
    async for page in pages:
        yield _chunk(
            (i.host_id, i.host, i.address, i.groups, i.health, i.last_boot_at, i.pending_patches)
            for i in page
        )
