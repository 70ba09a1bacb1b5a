"""PDF reports with fpdf2: cover, summary, charts drawn with the PDF's own lines and
rectangles, then the tables. Synchronous and CPU-bound: call it through
``trio.to_thread.run_sync`` (the web service does). Tables are drawn cell by cell: fpdf2's
``table()`` takes 6 to 9 s for 40 pages, the cell loop about a second for 2,500 hosts.
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from fpdf.fonts import TTFFont

from .model import ComplianceReport, ExposureReport, HistoryReport, RebootReport, trend_percentages

Progress = Callable[[int, int], None]

_COLOURS = {
    "compliant": (19, 115, 51),
    "noncompliant": (197, 34, 31),
    "unknown": (93, 100, 112),
    "critical": (197, 34, 31),
    "high": (176, 96, 0),
    "medium": (11, 87, 208),
    "low": (93, 100, 112),
    "bar": (11, 87, 208),
}


# A Unicode TrueType font when the system has one (Debian's fonts-dejavu-core), else the PDF
# core fonts, which know Latin-1 only.
_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_FONT_FILES = {"": _FONT_DIR / "DejaVuSans.ttf", "B": _FONT_DIR / "DejaVuSans-Bold.ttf"}


@functools.cache
def _glyphs() -> frozenset[int] | None:
    """The code points the Unicode font draws (None: no such font; the core fonts are used)."""
    if not all(path.is_file() for path in _FONT_FILES.values()):
        return None
    try:
        probe = FPDF()
        probe.add_font("Body", "", str(_FONT_FILES[""]))
        font = probe.fonts["body"]
        return frozenset(font.cmap) if isinstance(font, TTFFont) else None
    except Exception:  # an unreadable font file: fall back to the core fonts
        return None


def _zone(tz: str) -> tuple[dt.tzinfo, str]:
    """The reader's time zone and its name (UTC when ``tz`` is not a known zone)."""
    try:
        return ZoneInfo(tz), tz
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC, "UTC"


def _text(value: object, zone: dt.tzinfo = dt.UTC) -> str:
    """Text the font can draw: with the Unicode font, characters it lacks (e.g. CJK) become
    '?'; with the core fonts, accents are dropped where that leaves Latin-1 and anything else
    becomes '?'. Instants are shown in ``zone`` (the document names it)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    elif value is None:
        value = ""
    text = str(value)
    glyphs = _glyphs()
    if glyphs is not None:
        return "".join(c if ord(c) in glyphs or c in "\n\t" else "?" for c in text)
    text = "".join(
        c if ord(c) < 256 else unicodedata.normalize("NFKD", c)[:1] for c in text
    )  # fmt: skip
    return text.encode("latin-1", "replace").decode("latin-1")


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    colour: str = "bar"


class _Doc(FPDF):
    def __init__(self, title: str, as_of: dt.datetime, tz: str = "UTC") -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.report_title = title
        self.as_of = as_of
        self.zone, self.tz = _zone(tz)  # every time of the document is in the reader's zone
        self.set_auto_page_break(True, margin=12)
        self.body_font = "Helvetica"
        if _glyphs() is not None:
            for style, path in _FONT_FILES.items():
                self.add_font("Body", style, str(path))
            self.body_font = "Body"
        self.set_creator("Linux Patch Manager")
        self.set_title(title)

    def footer(self) -> None:
        self.set_y(-9)
        self.set_font(self.body_font, size=7)
        self.set_text_color(93, 100, 112)
        stamp = f"{self.report_title} - as of {self.when(self.as_of)} - page {self.page_no()}"
        self.cell(0, 4, stamp, align="C")
        self.set_text_color(0, 0, 0)

    def shown(self, value: object) -> str:
        """``_text`` with instants in the document's zone."""
        return _text(value, self.zone)

    def when(self, value: dt.datetime) -> str:
        """An instant with the zone named: '2026-11-30 17:30 Asia/Kolkata'."""
        return f"{self.shown(value)} {self.tz}"

    def timed(self, label: str) -> str:
        """A time column's label naming the zone: 'Expires (Asia/Kolkata)'."""
        return f"{label} ({self.tz})"

    def heading(self, text: str) -> None:
        self.set_font(self.body_font, "B", 13)
        self.cell(0, 9, _text(text), new_x="LMARGIN", new_y="NEXT")
        self.set_font(self.body_font, size=9)

    def line_text(self, text: str) -> None:
        self.set_font(self.body_font, size=10)
        self.cell(0, 6, _text(text), new_x="LMARGIN", new_y="NEXT")

    def fit(self, text: str, width: float) -> str:
        """``text`` cut to ``width`` (mm) in the current font, marked with '..' when cut."""
        if self.get_string_width(text) <= width:
            return text
        while text and self.get_string_width(text + "..") > width:
            text = text[:-1]
        return text + ".."

    def bars(self, title: str, bars: Sequence[Bar], height: float = 55) -> None:
        """A bar chart with its values written above the bars."""
        if self.get_y() + height + 20 > self.h - 15:
            self.add_page()
        self.heading(title)
        top = self.get_y() + 4
        left = self.l_margin + 5
        width = self.w - self.l_margin - self.r_margin - 10
        peak = max((b.value for b in bars), default=0) or 1
        step = width / max(len(bars), 1)
        self.set_draw_color(150, 150, 150)
        self.line(left, top + height, left + width, top + height)
        self.set_font(self.body_font, size=7)
        for i, b in enumerate(bars):
            h = height * b.value / peak
            x = left + i * step + step * 0.15
            self.set_fill_color(*_COLOURS.get(b.colour, _COLOURS["bar"]))
            if h > 0:
                self.rect(x, top + height - h, step * 0.7, h, style="F")
            self.set_xy(x - 2, top + height - h - 4)
            self.cell(step * 0.7 + 4, 4, f"{b.value:g}", align="C")
            self.set_xy(x - 2, top + height + 1)
            self.cell(step * 0.7 + 4, 4, self.fit(_text(b.label), step * 0.7 + 4), align="C")
        self.set_y(top + height + 8)

    def grid(
        self,
        headers: Sequence[str],
        widths: Sequence[float],
        rows: Sequence[Sequence[object]],
        progress: Progress | None = None,
    ) -> None:
        """Cell by cell (fast); the header repeats on every page."""

        def header() -> None:
            self.set_font(self.body_font, "B", 8)
            self.set_fill_color(230, 232, 236)
            for h, w in zip(headers, widths, strict=True):
                self.cell(w, 6, self.fit(_text(h), w - 1), border=1, fill=True)
            self.ln(6)
            self.set_font(self.body_font, size=8)

        header()
        bottom = self.h - 14
        for n, row in enumerate(rows):
            if self.get_y() + 5 > bottom:
                self.add_page()
                header()
            for value, w in zip(row, widths, strict=True):
                text = self.shown(value)
                while text and self.get_string_width(text) > w - 2:
                    text = text[: max(0, int(len(text) * 0.8))]
                self.cell(w, 5, text, border="B")
            self.ln(5)
            if progress is not None and n % 500 == 0:
                progress(n, len(rows))
        if progress is not None:
            progress(len(rows), len(rows))


def _cover(doc: _Doc, title: str, lines: Sequence[str]) -> None:
    doc.add_page()
    doc.set_font(doc.body_font, "B", 24)
    doc.cell(0, 40, "", new_x="LMARGIN", new_y="NEXT")
    doc.cell(0, 14, _text(title), new_x="LMARGIN", new_y="NEXT")
    doc.set_font(doc.body_font, size=12)
    doc.cell(0, 8, f"Linux Patch Manager - as of {doc.when(doc.as_of)}", new_x="LMARGIN",
             new_y="NEXT")  # fmt: skip
    for line in lines:
        doc.cell(0, 7, _text(line), new_x="LMARGIN", new_y="NEXT")


def compliance_pdf(
    report: ComplianceReport, progress: Progress | None = None, tz: str = "UTC"
) -> bytes:
    """The compliance report, its times in the reader's time zone ``tz`` (named on the cover,
    the footer and the time columns)."""
    doc = _Doc("Compliance report", report.as_of, tz)
    s = report.summary
    pct = "n/a (no host with known state)" if s.percent is None else f"{s.percent}%"
    of_all = "n/a (no host)" if s.percent_of_all is None else f"{s.percent_of_all}%"
    active = [w for w in report.waivers if w.revoked_at is None and w.expires_at > report.as_of]
    _cover(doc, "Compliance report", [f"{s.hosts} hosts in scope",
           f"Compliant: {of_all} of all hosts ({pct} of hosts with known state)",
           *report.about.lines()])  # fmt: skip
    doc.add_page()
    doc.heading("Summary")
    doc.line_text(f"Hosts: {s.hosts}")
    doc.line_text(
        f"Compliant: {s.compliant} ({of_all} of all hosts; {pct} of hosts with known state)"
    )
    doc.line_text(f"Compliant with active waivers: {s.waived_hosts}")
    doc.line_text(f"Not compliant: {s.noncompliant}")
    doc.line_text(f"Unknown (stale or no data): {s.unknown}")
    doc.line_text(f"Active waivers: {len(active)}")
    doc.ln(4)
    doc.bars(
        "Patch status distribution",
        [
            Bar("compliant", s.compliant, "compliant"),
            Bar("noncompliant", s.noncompliant, "noncompliant"),
            Bar("unknown", s.unknown, "unknown"),
        ],  # fmt: skip
    )
    doc.add_page()
    points = report.trend[-60:]
    doc.bars(
        "Compliance trend (% of hosts with known state, daily snapshots)",
        [Bar(day.strftime("%m-%d"), pct, "compliant") for day, pct in trend_percentages(points)]
        or [Bar("no snapshot with known hosts yet", 0)],
    )
    doc.bars(
        "Pending patches by severity",
        [Bar(k, v, k) for k, v in s.by_severity.items()],
        height=40,
    )
    doc.add_page()
    doc.heading("Hosts")
    doc.grid(
        [
            "Host",
            "Address",
            "Groups",
            "Status",
            "Past SLA",
            "Waived",
            "Pending",
            doc.timed("Last poll"),
            "Reason",
        ],
        [45, 28, 30, 24, 16, 14, 16, 40, 60],
        [
            (
                h.display_name or h.name,
                h.address,
                ",".join(h.groups),
                h.status,
                h.breaches,
                h.waived,
                h.pending,
                h.last_patch_poll_at,
                f"{h.reason} since {doc.shown(h.stale_since)}" if h.stale_since else h.reason,
            )  # fmt: skip
            for h in report.hosts
        ],
        progress,
    )
    if report.waivers:
        doc.add_page()
        doc.heading("Risk waivers (shown separately, never hidden)")
        doc.grid(
            ["Host", "Address", "Package", "CVE", "Owner", doc.timed("Expires"), "State", "Reason"],
            [40, 28, 32, 28, 28, 40, 20, 57],
            [
                (
                    w.host,
                    w.address,
                    w.package or "*",
                    w.cve or "*",
                    w.owner,
                    w.expires_at,
                    "revoked"
                    if w.revoked_at
                    else "expired"
                    if w.expires_at <= report.as_of
                    else "active",
                    w.reason,
                )  # fmt: skip
                for w in report.waivers
            ],
        )
    return bytes(doc.output())


def history_pdf(report: HistoryReport, progress: Progress | None = None, tz: str = "UTC") -> bytes:
    doc = _Doc("Patch history report", report.as_of, tz)
    _cover(doc, "Patch history report", [f"{len(report.rows)} host jobs", *report.about.lines()])
    doc.add_page()
    doc.heading("Mean time to remediate per severity")
    for r in report.remediation:
        mean = "-" if r.mean_hours is None else f"{r.mean_hours / 24:.1f} days"
        doc.line_text(f"{r.severity}: {mean} over {r.resolved} patches (SLA "
                      f"{report.sla_days.get(r.severity, 0)} days)")  # fmt: skip
    doc.bars("Jobs per day", [Bar(d[5:], n) for d, n in list(report.jobs_per_day.items())[-60:]]
             or [Bar("no jobs", 0)])  # fmt: skip
    doc.add_page()
    doc.heading("Host jobs")
    doc.grid(
        [
            "Job",
            "Kind",
            "Who",
            "Host",
            "Address",
            "Outcome",
            doc.timed("Started"),
            "Duration s",
            "What",
            "Error",
        ],
        [14, 18, 22, 38, 26, 20, 40, 16, 36, 43],
        [
            (
                r.job_id,
                r.kind,
                r.created_by,
                r.host,
                r.address,
                r.state,
                r.started_at,
                "" if r.duration_s is None else round(r.duration_s),
                r.packages,
                " ".join(x for x in (r.error_code, r.error_message) if x),
            )  # fmt: skip
            for r in report.rows
        ],
        progress,
    )
    return bytes(doc.output())


def exposure_pdf(
    report: ExposureReport, progress: Progress | None = None, tz: str = "UTC"
) -> bytes:
    doc = _Doc("Vulnerability exposure report", report.as_of, tz)
    _cover(doc, "Vulnerability exposure report",
           [f"{len(report.items)} pending security patches on {report.hosts} hosts",
            f"{report.cves} distinct CVE ids",
            f"{report.waived} covered by an active waiver (not in the severity/age table)",
            *report.about.lines()])  # fmt: skip
    doc.add_page()
    doc.heading("By severity and age")
    for sev, ages in report.by_severity_age.items():
        doc.line_text(f"{sev}: " + ", ".join(f"{k}: {v}" for k, v in ages.items()))
    doc.add_page()
    doc.heading("Pending security patches")
    doc.grid(
        [
            "Host",
            "Address",
            "Package",
            "Severity",
            "CVE ids",
            doc.timed("First seen"),
            "Age d",
            "Waived",
        ],  # fmt: skip
        [45, 28, 40, 20, 57, 40, 15, 20],
        [
            (
                i.host,
                i.address,
                i.package,
                i.severity,
                " ".join(i.cve_ids),
                i.first_seen_at,
                i.age_days,
                "yes" if i.waived else "",
            )  # fmt: skip
            for i in report.items
        ],
        progress,
    )
    return bytes(doc.output())


def reboot_pdf(report: RebootReport, progress: Progress | None = None, tz: str = "UTC") -> bytes:
    doc = _Doc("Reboot-pending report", report.as_of, tz)
    _cover(doc, "Reboot-pending report",
           [f"{len(report.items)} hosts need a reboot", *report.about.lines()])  # fmt: skip
    doc.add_page()
    doc.heading("Hosts needing a reboot")
    doc.grid(
        ["Host", "Address", "Groups", "Health", doc.timed("Last boot"), "Pending patches"],
        [55, 35, 60, 30, 45, 25],
        [
            (i.host, i.address, ",".join(i.groups), i.health, i.last_boot_at, i.pending_patches)
            for i in report.items
        ],
        progress,
    )
    return bytes(doc.output())
