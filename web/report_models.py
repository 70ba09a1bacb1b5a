"""Typed models of the reports and waivers API (query strings, bodies and replies); the
OpenAPI document (``web.openapi``) is generated from them like from ``web.models``."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from reports.model import ExposureItem, HostCompliance, RebootItem
from storage.reports import HistoryRow, Remediation, TrendPoint, WaiverRow

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
