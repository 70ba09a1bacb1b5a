"""The compliance PDF gives its times in the requesting user's time zone, named in the cover,
the footer and the time columns' labels (review rvA, point 3)."""

from __future__ import annotations

import datetime as dt
import io

import pypdf

from reports.model import ComplianceReport, HostCompliance, Summary
from reports.pdf import compliance_pdf
from storage.reports import WaiverRow

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)  # 17:30 in Kolkata
POLLED = dt.datetime(2026, 11, 20, 6, 40, tzinfo=dt.UTC)  # 12:10 in Kolkata


def report() -> ComplianceReport:
    hosts = [
        HostCompliance(1, "db-01", (), "unknown", "unknown", "patch data stale", 0, 0, 0, POLLED,
                       stale_since=POLLED),
    ]  # fmt: skip
    waiver = WaiverRow(1, 1, "db-01", "openssl", "", "sec", "vendor fix",
                       NOW + dt.timedelta(days=3), "admin", NOW, None, "")  # fmt: skip
    return ComplianceReport(NOW, Summary(hosts=1, unknown=1), [], hosts, [waiver])


def text_of(data: bytes) -> str:
    return "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(data)).pages)


def test_compliance_pdf_in_the_users_zone_names_it_and_shows_local_times() -> None:
    text = text_of(compliance_pdf(report(), tz="Asia/Kolkata"))
    assert "as of 2026-11-30 17:30 Asia/Kolkata" in text
    assert "Last poll (Asia/Kolkata)" in text
    assert "Expires (Asia/Kolkata)" in text
    assert "2026-11-20 12:10" in text  # the poll and the stale reason
    assert "patch data stale since 2026-11-20 12:10" in text
    assert "2026-12-03 17:30" in text  # the waiver's expiry
    assert "06:40" not in text


def test_compliance_pdf_without_a_zone_labels_its_times_utc() -> None:
    text = text_of(compliance_pdf(report()))
    assert "as of 2026-11-30 12:00 UTC" in text
    assert "Last poll (UTC)" in text and "Expires (UTC)" in text
