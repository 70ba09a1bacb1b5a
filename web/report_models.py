"""Typed models of the reports and waivers API (query strings, bodies and replies); the
OpenAPI document (``web.openapi``) is generated from them like from ``web.models``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from reports.model import About, ExposureItem, HostCompliance, RebootItem
from storage.reports import HistoryRow, Remediation, ReportDefinition, TrendPoint, WaiverRow

from .models import Body, FieldErrors, Id, Query, Reply

Severity = Literal["critical", "high", "medium", "low"]
MAX_RANGE_DAYS = 3660
FIRST_DAY = dt.date(1970, 1, 1)
LAST_DAY = dt.date.max - dt.timedelta(days=1)  # the day after it must still be a date


def range_problems(since: dt.date | None, until: dt.date | None, prefix: str = "") -> None:
    """The one rule for a report's date range (queries, the page and stored definitions):
    each day between ``FIRST_DAY`` and ``LAST_DAY``, ``until`` not before ``since`` and at most
    ``MAX_RANGE_DAYS`` days; raises ``FieldErrors`` naming the fields (``prefix`` + name)."""
    errors: dict[str, str] = {}
    for name, day in (("since", since), ("until", until)):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            errors[prefix + name] = f"a day from {FIRST_DAY} to {LAST_DAY}"
    if errors:
        raise FieldErrors(errors)
    if since and until and until < since:
        raise FieldErrors({prefix + "until": "must not be before since"})
    if since and until and (until - since).days + 1 > MAX_RANGE_DAYS:
        raise FieldErrors({prefix + "until": f"a range of at most {MAX_RANGE_DAYS} days"})


class ReportQuery(Query):
    format: Literal["json", "csv", "pdf"] = "json"
    since: dt.date | None = Field(None, description="first day (UTC), inclusive")
    until: dt.date | None = Field(None, description="last day (UTC), inclusive")
    group: str = Field("", max_length=64, description="group name")
    host_id: Id | None = None
    severity: Severity | None = Field(None, description="lowest severity shown (exposure)")

    @model_validator(mode="after")
    def _ordered(self) -> ReportQuery:
        range_problems(self.since, self.until)
        return self


class EvidenceQuery(Query):
    since: dt.date | None = None
    until: dt.date | None = None
    group: str = Field("", max_length=64)

    @model_validator(mode="after")
    def _ordered(self) -> EvidenceQuery:
        range_problems(self.since, self.until)
        return self


_CVE = re.compile(r"^CVE-\d{4}-\d{4,19}$")


class WaiverCreate(Body):
    host_id: Id
    package: str = Field("", max_length=256, description="empty: every package")
    cve: str = Field("", max_length=64, description="empty: every CVE; else CVE-YYYY-NNNN…")
    owner: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    expires_at: dt.datetime = Field(description="a time without a zone is UTC")

    @field_validator("owner", "reason")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("required")
        return value.strip()

    @field_validator("cve")
    @classmethod
    def _cve(cls, value: str) -> str:
        value = value.strip().upper()
        if value and not _CVE.match(value):
            raise ValueError("a CVE id such as CVE-2024-12345 (year, then 4 or more digits)")
        return value

    @field_validator("expires_at")
    @classmethod
    def _zone(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("a date-time between the years 1 and 9999") from None
        return value


class SummaryOut(Reply):
    hosts: int
    compliant: int
    noncompliant: int
    unknown: int
    waived_hosts: int = Field(description="compliant only thanks to an active waiver")
    percent: float | None = Field(description="compliant share of hosts with known state")
    percent_of_all: float | None = Field(
        description="compliant share of all hosts (unknown ones count against it)"
    )
    by_severity: dict[str, int]


class ComplianceOut(Reply):
    as_of: dt.datetime
    summary: SummaryOut
    trend: list[TrendPoint]
    hosts: list[HostCompliance]
    waivers: list[WaiverRow]
    about: About = Field(description="who generated it, the scope and the filters given")


class HistoryOut(Reply):
    as_of: dt.datetime
    remediation: list[Remediation]
    sla_days: dict[str, int]
    outcomes: dict[str, int]
    jobs_per_day: dict[str, int]
    rows: list[HistoryRow]
    about: About = Field(description="who generated it, the scope and the filters given")


class ExposureOut(Reply):
    as_of: dt.datetime
    by_severity_age: dict[str, dict[str, int]] = Field(description="patches not waived")
    waived: int = Field(description="patches covered by an active waiver (listed in items)")
    hosts: int
    cves: int
    items: list[ExposureItem]
    about: About = Field(description="who generated it, the scope and the filters given")


class RebootsOut(Reply):
    as_of: dt.datetime
    items: list[RebootItem]
    about: About = Field(description="who generated it, the scope and the filters given")


class WaiversOut(Reply):
    as_of: dt.datetime
    waivers: list[WaiverRow]


class WaiverCreated(Reply):
    id: int
    warnings: list[str] = Field(
        default_factory=list, description="e.g. nothing it covers is pending on the host now"
    )


_CRON_FIELD = re.compile(
    r"^(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?(,(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?)*$"
)
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _cron_values(value: str, low: int, high: int) -> set[int] | str:
    """The numbers a cron field (already matching ``_CRON_FIELD``) selects, or the problem."""
    out: set[int] = set()
    for part in value.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            return "a step of at least 1"
        if base == "*":
            first, last = low, high
        else:
            first_text, _, last_text = base.partition("-")
            first = int(first_text)
            last = int(last_text) if last_text else (high if step_text else first)
        if not (low <= first <= high and low <= last <= high):
            return f"between {low} and {high}"
        if last < first:
            return "a range must not be reversed"
        out.update(range(first, last + 1, step))
    return out


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February in a leap year


def cron_problem(text: str) -> str | None:
    """Why ``text`` is not a five-field cron schedule (minute hour day month weekday) that
    fires: ranges in order, steps of at least 1, a day of month that some given month has."""
    fields = text.split()
    if len(fields) != 5:
        return "five fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * 1'"
    names = ("minute", "hour", "day of month", "month", "day of week")
    selected: list[set[int]] = []
    for value, (low, high), name in zip(fields, _CRON_RANGES, names, strict=True):
        if not _CRON_FIELD.match(value):
            return f"{name}: numbers, ranges, lists, steps or '*'"
        values = _cron_values(value, low, high)
        if isinstance(values, str):
            return f"{name}: {values}"
        selected.append(values)
    days, months = selected[2], selected[3]
    # With a restricted day of week cron fires on either; otherwise the day must exist.
    if fields[4] == "*" and not any(d <= _MONTH_DAYS[m - 1] for d in days for m in months):
        return "day of month: never in the given months"
    return None


class ReportFilters(Body):
    since: dt.date | None = None
    until: dt.date | None = None
    group: str = Field("", max_length=64)
    host_id: Id | None = None
    severity: Severity | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ReportFilters:
        range_problems(self.since, self.until, "filters.")
        return self


class DefinitionCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    report: Literal["compliance", "patch-history", "exposure", "reboots"]
    format: Literal["json", "csv", "pdf"] = "pdf"
    filters: ReportFilters | None = None
    recipients: list[Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$",
                                                      max_length=254)]] = Field(
        default_factory=list, max_length=50,
        description="e-mail addresses (delivery arrives with the notifications work)",
    )  # fmt: skip
    schedule: str = Field(max_length=100, description="cron: minute hour day month weekday")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return " ".join(value.split())

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("required")
        return value.strip()


class Definitions(Reply):
    definitions: list[ReportDefinition]
