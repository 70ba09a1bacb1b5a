"""Input validation shared by the HTML forms and the JSON API: every problem is reported per
field, all at once."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from maintenance import Recurrence, ShortMonth, WindowRule
from storage import HEALTH_STATES, SORTS, HostFilter

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ValidationFailed(Exception):
    """``errors`` maps field name → message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class HostInput:
    name: str
    display_name: str
    groups: tuple[str, ...]
    port: int | None


def _groups(value: Any, errors: dict[str, str]) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(g, str) for g in items):
        errors["groups"] = "must be a list of group names"
        return ()
    groups = tuple(g.strip() for g in items if g.strip())
    bad = [g for g in groups if not GROUP_NAME.match(g)]
    if bad:
        errors["groups"] = f"invalid group name(s): {', '.join(bad)}"
    return groups


def _int(value: Any, field: str, errors: dict[str, str], low: int, high: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
        if isinstance(value, bool | float):
            raise ValueError
    except (TypeError, ValueError):
        errors[field] = "must be a whole number"
        return None
    if not low <= number <= high:
        errors[field] = f"must be between {low} and {high}"
        return None
    return number


def host_input(data: Mapping[str, Any]) -> HostInput:
    errors: dict[str, str] = {}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "enter an FQDN or an IP address"
        name = ""
    display = data.get("display_name") or ""
    if not isinstance(display, str) or len(display) > 100:
        errors["display_name"] = "at most 100 characters"
        display = ""
    groups = _groups(data.get("groups"), errors)
    port = _int(data.get("port"), "port", errors, 1, 65535)
    if errors:
        raise ValidationFailed(errors)
    return HostInput(name.strip(), display.strip(), groups, port)


def group_name(value: Any) -> str:
    if not isinstance(value, str) or not GROUP_NAME.match(value.strip()):
        raise ValidationFailed({"name": "letters, digits, '.', '_' or '-', up to 64 characters"})
    return value.strip()


def host_ids(value: Any, field: str = "host_ids") -> list[int]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ValidationFailed({field: "select at least one host"})
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValidationFailed({field: "host ids must be whole numbers"}) from None


def host_filter(query: Mapping[str, str]) -> HostFilter:
    errors: dict[str, str] = {}
    health = query.get("health", "")
    if health and health not in HEALTH_STATES:
        errors["health"] = f"one of {', '.join(HEALTH_STATES)}"
    sort = query.get("sort", "name") or "name"
    if sort not in SORTS:
        errors["sort"] = f"one of {', '.join(SORTS)}"
    order = query.get("order", "asc") or "asc"
    if order not in ("asc", "desc"):
        errors["order"] = "asc or desc"
    reboot_text = query.get("reboot", "")
    reboot = {"": None, "yes": True, "true": True, "no": False, "false": False}.get(reboot_text)
    if reboot_text not in ("", "yes", "true", "no", "false"):
        errors["reboot"] = "yes or no"
    min_pending = _int(query.get("min_pending"), "min_pending", errors, 0, 100_000) or 0
    limit = _int(query.get("limit"), "limit", errors, 1, 500) or 50
    page = _int(query.get("page"), "page", errors, 1, 1_000_000) or 1
    offset = _int(query.get("offset"), "offset", errors, 0, 10_000_000)
    if errors:
        raise ValidationFailed(errors)
    return HostFilter(
        group=query.get("group", ""),
        health=health,
        os=query.get("os", ""),
        min_pending=min_pending,
        reboot=reboot,
        text=query.get("q", "").strip(),
        sort=sort,
        descending=order == "desc",
        limit=limit,
        offset=offset if offset is not None else (page - 1) * limit,
    )


JOB_KINDS = ("patch", "install", "update", "remove", "reboot")
WINDOW_RECURRENCES = ("once", "daily", "weekly", "monthly_day", "monthly_nth")


@dataclass(frozen=True)
class JobInput:
    kind: str
    schedule: str
    selection: str
    packages: tuple[Any, ...]
    allow_reboot: bool
    reboot_delay_s: int
    batch_size: int | None
    batch_percent: int | None
    failure_threshold: int | None
    canary: bool
    host_ids: tuple[int, ...]
    group: str
    filter_text: str


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


def job_input(data: Mapping[str, Any]) -> JobInput:
    errors: dict[str, str] = {}
    kind = str(data.get("kind") or "patch")
    if kind not in JOB_KINDS:
        errors["kind"] = f"one of {', '.join(JOB_KINDS)}"
    schedule = str(data.get("schedule") or "window")
    if schedule not in ("now", "window"):
        errors["schedule"] = "now or window"
    selection = str(data.get("selection") or "all")
    if selection not in ("all", "security", "list"):
        errors["selection"] = "all, security or list"
    raw = data.get("packages") or []
    if isinstance(raw, str):
        raw = [p.strip() for p in raw.replace("\n", ",").split(",") if p.strip()]
    if not isinstance(raw, list):
        errors["packages"] = "a list of package names"
        raw = []
    packages = tuple(raw)
    if kind in ("install", "update", "remove") or selection == "list":
        if not packages:
            errors["packages"] = "name at least one package"
        bad = [p for p in packages if not isinstance(p, str | dict)]
        if bad:
            errors["packages"] = "package names must be strings"
    if kind in ("update", "remove") and len(packages) > 1:
        errors["packages"] = "update and remove take one package per job"
    ids: list[int] = []
    raw_ids = data.get("host_ids")
    if raw_ids not in (None, "", []):
        try:
            ids = host_ids(raw_ids)
        except ValidationFailed as exc:
            errors.update(exc.errors)
    group = str(data.get("group") or "")
    filter_text = str(data.get("filter") or "")
    if not ids and not group and not filter_text:
        errors["hosts"] = "choose hosts: a list, a group or a filter"
    delay = _int(data.get("reboot_delay_s"), "reboot_delay_s", errors, 0, 86_400) or 0
    size = _int(data.get("batch_size"), "batch_size", errors, 1, 100_000)
    percent = _int(data.get("batch_percent"), "batch_percent", errors, 1, 100)
    threshold = _int(data.get("failure_threshold"), "failure_threshold", errors, 0, 100_000)
    if errors:
        raise ValidationFailed(errors)
    return JobInput(
        kind,
        schedule,
        selection,
        packages,
        _bool(data.get("allow_reboot")),
        delay,
        size,
        percent,
        threshold,
        _bool(data.get("canary")),
        tuple(ids),
        group,
        filter_text,
    )


def window_input(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validated column values for a maintenance window (raises ValidationFailed)."""
    errors: dict[str, str] = {}
    recurrence = str(data.get("recurrence") or "weekly")
    if recurrence not in WINDOW_RECURRENCES:
        errors["recurrence"] = f"one of {', '.join(WINDOW_RECURRENCES)}"
        recurrence = "daily"
    try:
        start_date = dt.date.fromisoformat(str(data.get("start_date") or dt.date.today()))
    except ValueError:
        errors["start_date"] = "a date such as 2026-12-01"
        start_date = dt.date.today()
    try:
        start_time = dt.time.fromisoformat(str(data.get("start_time") or "02:00"))
    except ValueError:
        errors["start_time"] = "a time such as 02:00"
        start_time = dt.time(2, 0)
    duration = _int(data.get("duration_minutes") or 120, "duration_minutes", errors, 1, 10080)
    weekdays_raw = data.get("weekdays") or []
    if isinstance(weekdays_raw, str):
        weekdays_raw = [w for w in weekdays_raw.split(",") if w.strip()]
    try:
        weekdays = sorted({int(w) for w in weekdays_raw})
    except (TypeError, ValueError):
        errors["weekdays"] = "numbers 0 (Monday) to 6 (Sunday)"
        weekdays = []
    day = _int(data.get("day_of_month") or 1, "day_of_month", errors, 1, 31) or 1
    nth = _int(data.get("nth") or 1, "nth", errors, -1, 5) or 1
    until = None
    if data.get("until"):
        try:
            until = dt.date.fromisoformat(str(data["until"]))
        except ValueError:
            errors["until"] = "a date such as 2027-06-30"
    short = str(data.get("short_month") or "clamp")
    auto = str(data.get("auto_apply") or "none")
    if auto not in ("none", "all", "security"):
        errors["auto_apply"] = "none, all or security"
    host_id = _int(data.get("host_id"), "host_id", errors, 1, 2**62)
    group_id = _int(data.get("group_id"), "group_id", errors, 1, 2**62)
    if (host_id is None) == (group_id is None):
        errors["target"] = "choose either a host or a group"
    timezone = str(data.get("timezone") or "UTC")
    rule = WindowRule(
        Recurrence(recurrence),
        start_date,
        start_time,
        dt.timedelta(minutes=duration or 1),
        timezone,
        frozenset(weekdays),
        day,
        ShortMonth(short) if short in ("clamp", "skip") else ShortMonth.CLAMP,
        nth,
        until,
    )
    for key, message in rule.problems().items():
        errors.setdefault("duration_minutes" if key == "duration" else key, message)
    if errors:
        raise ValidationFailed(errors)
    return {
        "name": str(data.get("name") or "")[:100],
        "host_id": host_id,
        "group_id": group_id,
        "recurrence": recurrence,
        "start_date": start_date,
        "start_time": start_time,
        "duration_minutes": duration,
        "timezone": timezone,
        "weekdays": weekdays,
        "day_of_month": day,
        "short_month": short,
        "nth": nth,
        "until": until,
        "enabled": data.get("enabled", True) not in (False, "false", "off", "0"),
        "auto_apply": auto,
        "allow_reboot": _bool(data.get("allow_reboot")),
    }
