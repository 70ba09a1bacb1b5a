"""Typed models of the reports and waivers API (query strings, bodies and replies); the
OpenAPI document (``web.openapi``) is generated from them like from ``web.models``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from reports.model import ExposureItem, HostCompliance, RebootItem
from storage.reports import HistoryRow, Remediation, ReportDefinition, TrendPoint, WaiverRow

from .models import Body, FieldErrors, Id, Query, Reply

Severity = Literal["critical", "high", "medium", "low"]
MAX_RANGE_DAYS = 3660


class ReportQuery(Query):
    format: Literal["json", "csv", "pdf"] = "json"
    since: dt.date | None = Field(None, description="first day (UTC), inclusive")
    until: dt.date | None = Field(None, description="last day (UTC), inclusive")
    group: str = Field("", max_length=64, description="group name")
    host_id: Id | None = None
    severity: Severity | None = Field(None, description="lowest severity shown (exposure)")

    @model_validator(mode="after")
    def _ordered(self) -> ReportQuery:
        if self.since and self.until and self.until < self.since:
            raise FieldErrors({"until": "must not be before since"})
        return self


class EvidenceQuery(Query):
    since: dt.date | None = None
    until: dt.date | None = None
    group: str = Field("", max_length=64)

    @model_validator(mode="after")
    def _ordered(self) -> EvidenceQuery:
        if self.since and self.until and self.until < self.since:
            raise FieldErrors({"until": "must not be before since"})
        return self


class WaiverCreate(Body):
    host_id: Id
    package: str = Field("", max_length=256, description="empty: every package")
    cve: str = Field("", max_length=64, description="empty: every CVE")
    owner: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    expires_at: dt.datetime = Field(description="a time without a zone is UTC")

    @field_validator("owner", "reason")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("required")
        return value.strip()

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
    by_severity: dict[str, int]


class ComplianceOut(Reply):
    as_of: dt.datetime
    summary: SummaryOut
    trend: list[TrendPoint]
    hosts: list[HostCompliance]
    waivers: list[WaiverRow]


class HistoryOut(Reply):
    as_of: dt.datetime
    remediation: list[Remediation]
    sla_days: dict[str, int]
    outcomes: dict[str, int]
    jobs_per_day: dict[str, int]
    rows: list[HistoryRow]


class ExposureOut(Reply):
    as_of: dt.datetime
    by_severity_age: dict[str, dict[str, int]]
    hosts: int
    cves: int
    items: list[ExposureItem]


class RebootsOut(Reply):
    as_of: dt.datetime
    items: list[RebootItem]


class WaiversOut(Reply):
    as_of: dt.datetime
    waivers: list[WaiverRow]


class WaiverCreated(Reply):
    id: int


_CRON_FIELD = re.compile(
    r"^(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?(,(\*|\d{1,2}(-\d{1,2})?)(/\d{1,2})?)*$"
)
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_problem(text: str) -> str | None:
    """Why ``text`` is not a five-field cron schedule (minute hour day month weekday)."""
    fields = text.split()
    if len(fields) != 5:
        return "five fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * 1'"
    for value, (low, high), name in zip(
        fields, _CRON_RANGES, ("minute", "hour", "day of month", "month", "day of week"),
        strict=True,
    ):  # fmt: skip
        if not _CRON_FIELD.match(value):
            return f"{name}: numbers, ranges, lists, steps or '*'"
        numbers = [int(n) for n in re.findall(r"\d+", value.split("/")[0])]
        if any(not low <= n <= high for n in numbers):
            return f"{name}: between {low} and {high}"
    return None


class ReportFilters(Body):
    since: dt.date | None = None
    until: dt.date | None = None
    group: str = Field("", max_length=64)
    host_id: Id | None = None
    severity: Severity | None = None


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
