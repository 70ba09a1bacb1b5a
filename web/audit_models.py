"""Typed models of the audit API (``/api/v1/audit``): query strings, bodies and replies; the
OpenAPI document (``web.openapi``) is generated from them like from ``web.models``."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from .models import Body, Id, Query, Reply

Outcome = Literal["ok", "failed", "denied"]


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time in UTC; one without a zone is taken as UTC. Out of range: ``ValueError``."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


class AuditFilters(Query):
    since: dt.datetime | None = Field(None, description="entries at or after this time (UTC)")
    until: dt.datetime | None = Field(None, description="entries before this time (UTC)")
    actor: str = Field(
        "", max_length=200, description="exact, or a prefix ending in ':' or '*' (user:, token:*)"
    )
    action: str = Field(
        "", max_length=100, description="exact, or a prefix ending in '.' or '*' (host., job.*)"
    )
    target: str = Field(
        "", max_length=200, description="exact (host:12), or a prefix ending in ':' or '*'"
    )
    outcome: Outcome | None = None

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        return utc(value)


class AuditQuery(AuditFilters):
    limit: int = Field(100, ge=1, le=500, description="entries per page (newest first)")
    before_id: Id | None = Field(None, description="the page after: entries older than this id")


class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str = Field(
        description='"user:NAME", "token:ID:NAME@OWNER", "cli:USER@HOST", "system"...'
    )
    source: str = Field(description="client address")
    request_id: str = Field(description="X-Request-Id of the request")
    action: str
    target: str
    before: Any = None
    after: Any = None
    outcome: Outcome
    detail: str
    mac: str = Field(description="HMAC-SHA256 (hex) chaining this entry to the previous one")


class AuditList(Reply):
    entries: list[AuditEntryOut]
    total: int = Field(
        description="entries matching the filters, counted up to 10000 (10001 means more)"
    )
    next_before_id: int | None = Field(description="before_id of the next page; null: last page")


class AuditVerify(Body):
    since: dt.datetime | None = Field(None, description="start at the first entry of this time")

    @field_validator("since")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        return utc(value)


class AuditVerification(Reply):
    ok: bool
    checked: int = Field(description="entries whose MAC was checked")
    first_id: int | None
    last_id: int | None
    broken_id: int | None = Field(description="the first broken entry (null when ok)")
    problem: str = Field(description="what is wrong with it (edited, deleted, inserted...)")
    checkpoint: int | None = Field(description="the signed checkpoint the chain started from")
    verified_at: dt.datetime
