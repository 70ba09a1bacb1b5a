"""HTML forms into the typed models of ``web.models``: the pages validate with exactly the
models the JSON API uses, so a field shows the same message on a page as in the API's 422.

A form sends strings: empty fields mean "not given", lists arrive comma- or line-separated (or
as repeated fields), checkboxes are present or absent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.datastructures import FormData

from .freshness import zone
from .handle import InvalidInput
from .models import BlackoutCreate, HostCreate, HostQuery, JobCreate, Window
from .models_io import given, split_list, validate

CHECKBOXES = ("allow_reboot", "canary", "all_hosts")


def fields(form: FormData) -> dict[str, str]:
    """Single-valued fields, without the CSRF token (what is re-shown after an error)."""
    return {k: str(v) for k, v in form.items() if k != "csrf_token"}


def host_form(form: Mapping[str, str]) -> HostCreate:
    values: dict[str, Any] = given(form)
    if "groups" in values:
        values["groups"] = split_list(values["groups"])
    return validate(HostCreate, values)


def host_query(params: Mapping[str, str]) -> HostQuery:
    return validate(HostQuery, given(params))


def job_form(form: Mapping[str, str], ticked: Sequence[str] = ()) -> JobCreate:
    """A deployment from the Deploy form; ``ticked``: the patches chosen one by one (their
    checkboxes), which make the job "only these packages"."""
    values: dict[str, Any] = given({k: v for k, v in form.items() if k in JobCreate.model_fields})
    for key in CHECKBOXES:
        values[key] = key in values and values[key] not in ("", "off", "false", "0")
    if "packages" in values:
        values["packages"] = split_list(values["packages"])
    if ticked:
        values["selection"] = "list"
        values["packages"] = list(dict.fromkeys([*values.get("packages", []), *ticked]))
    if "host_ids" in values:
        values["host_ids"] = split_list(values["host_ids"])
    return validate(JobCreate, values)


def window_form(form: FormData) -> Window:
    values: dict[str, Any] = given({k: str(v) for k, v in form.items() if k in Window.model_fields})
    values["weekdays"] = [str(v) for v in form.getlist("weekdays")]
    values["enabled"] = "enabled" in form
    values["allow_reboot"] = "allow_reboot" in form
    target = str(form.get("target", ""))
    if target.startswith("host:"):
        values["host_id"] = target[5:]
    elif target.startswith("group:"):
        values["group_id"] = target[6:]
    return validate(Window, values)


def in_zone(values: Mapping[str, str], keys: Sequence[str], tz: str) -> dict[str, str]:
    """``values`` with each of ``keys`` that is a date-time without a zone (a page's
    datetime-local input) read in the time zone ``tz`` (the user's, as the page shows times);
    anything else is left for the model to judge. The API's rule is unchanged: no zone, UTC.

    A local time the zone skips (spring forward) or has twice (fall back) is refused with
    ``InvalidInput`` naming the field: the page cannot say which instant is meant, and shifting
    it silently would move a blackout or a filter by an hour."""
    out = dict(values)
    problems: dict[str, str] = {}
    for key in keys:
        try:
            at = dt.datetime.fromisoformat(out.get(key, ""))
        except ValueError:
            continue
        if at.tzinfo is not None:
            continue
        local = at.replace(tzinfo=zone(tz))
        shown = f"{at:%Y-%m-%d %H:%M}"
        if local.astimezone(dt.UTC).astimezone(local.tzinfo).replace(tzinfo=None) != at:
            problems[key] = (
                f"{shown} does not exist in {tz} (the clocks skip it); pick another time"
            )
        elif local.utcoffset() != local.replace(fold=1).utcoffset():
            problems[key] = (
                f"{shown} happens twice in {tz} (the clocks go back); pick a time outside that hour"
            )
        else:
            out[key] = local.isoformat()
    if problems:
        raise InvalidInput.of(problems)
    return out


def blackout_form(form: FormData, tz: str = "UTC") -> BlackoutCreate:
    """A blackout from the page: times without a zone are in ``tz`` (the user's)."""
    keys = ("name", "starts_at", "ends_at")
    values = in_zone({k: str(form.get(k, "")) for k in keys}, ("starts_at", "ends_at"), tz)
    try:
        return validate(BlackoutCreate, given(values))
    except InvalidInput as exc:
        # The model's messages name its keys ("must be after starts_at"): the page's labels.
        labels = {"starts_at": "From", "ends_at": "To"}
        named = {
            k: re.sub(r"\b(starts_at|ends_at)\b", lambda m: labels[m[0]], v)
            for k, v in exc.fields.items()
        }
        raise InvalidInput.of(zoned_messages(named, ("starts_at", "ends_at"), tz)) from exc


def zoned_messages(fields: Mapping[str, str], keys: Sequence[str], tz: str) -> dict[str, str]:
    """A page's field errors with the API's date-time hint ("such as 2026-12-01T02:00:00Z", a
    UTC instant) replaced, for the ``keys`` a page labels in the user's zone ``tz``, by a hint
    in that field's own format and zone."""
    return {
        k: f"a date and time in {tz}, such as 2026-12-01 02:00"
        if k in keys and v.startswith("a date-time such as")
        else v
        for k, v in fields.items()
    }
