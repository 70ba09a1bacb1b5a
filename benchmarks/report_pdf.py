"""Compliance PDF for a fleet of N hosts (issue 15 goal: 2,500 hosts in < 3 s).

    .venv/bin/python benchmarks/report_pdf.py --hosts 2500 --runs 3

Builds a compliance report in memory (hosts with groups, statuses and reasons, 90 days of trend,
40 waivers) and times ``reports.pdf.compliance_pdf`` (cell-by-cell tables) and, for comparison,
the same host table drawn with fpdf2's ``table()``. Prints the time per run, the page count and
the file size. No database: this measures the rendering the web service runs in a thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from fpdf import FPDF

from reports.model import ComplianceReport, HostCompliance, Summary
from reports.pdf import compliance_pdf
from storage.reports import TrendPoint, WaiverRow

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
STATUSES = ("compliant", "compliant", "compliant", "noncompliant", "unknown")


def report(hosts: int) -> ComplianceReport:
    rows = [
        HostCompliance(
            i,
            f"host-{i:05d}.example.internal",
            (f"group{i % 20}",),
            STATUSES[i % 5],
            STATUSES[i % 5],
            "" if i % 5 < 3 else "2 patch(es) past SLA; worst openssl (critical)",
            i % 3,
            0,
            i % 17,
            NOW - dt.timedelta(minutes=i % 50),
        )  # fmt: skip
        for i in range(1, hosts + 1)
    ]
    trend = [
        TrendPoint(
            NOW.date() - dt.timedelta(days=d),
            hosts,
            hosts * 3 // 5,
            hosts // 5,
            hosts // 5,
            4,
            False,
        )  # fmt: skip
        for d in range(90, 0, -1)
    ]
    waivers = [
        WaiverRow(
            i,
            i,
            f"host-{i:05d}",
            "openssl",
            "",
            "sec team",
            "vendor fix pending",
            NOW + dt.timedelta(days=i),
            "admin",
            NOW,
            None,
            "",
        )  # fmt: skip
        for i in range(1, 41)
    ]
    counts = {s: sum(1 for r in rows if r.status == s) for s in set(STATUSES)}
    pending = {"critical": hosts, "high": 2 * hosts, "medium": 3 * hosts, "low": 0}
    summary = Summary(hosts, counts["compliant"], counts["noncompliant"], counts["unknown"], 40,
                      pending)  # fmt: skip
    return ComplianceReport(NOW, summary, trend, rows, waivers)


def with_table(data: ComplianceReport) -> bytes:
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_font("Helvetica", size=8)
    pdf.add_page()
    with pdf.table(col_widths=(55, 40, 30, 16, 16, 16, 30, 70)) as table:
        table.row(["Host", "Groups", "Status", "Past SLA", "Waived", "Pending", "Polled", "Reason"])
        for h in data.hosts:
            table.row([h.name, ",".join(h.groups), h.status, str(h.breaches), str(h.waived),
                       str(h.pending), h.last_patch_poll_at.isoformat()[:16] if h.last_patch_poll_at
                       else "", h.reason])  # fmt: skip
    return bytes(pdf.output())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=2500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-table", action="store_true", help="also time fpdf2 table()")
    args = parser.parse_args()
    data = report(args.hosts)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        out = compliance_pdf(data)
        times.append(time.perf_counter() - start)
    pages = out.count(b"/Type /Page") - out.count(b"/Type /Pages")
    runs = [round(t, 2) for t in times]
    median = statistics.median(times)
    print(f"compliance_pdf, {args.hosts} hosts: runs {runs} s, median {median:.2f} s,"
          f" {len(out) // 1024} KiB, {pages} pages")  # fmt: skip
    if args.compare_table:
        start = time.perf_counter()
        out = with_table(data)
        print(f"fpdf2 table(), host table only: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
