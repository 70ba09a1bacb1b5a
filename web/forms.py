"""Input validation shared by the HTML forms and the JSON API: every problem is reported per
field, all at once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
