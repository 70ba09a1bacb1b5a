"""What a host's data supports, in words (issue 16 point 1, R-10.4), and the one time format.

Every page shows a host through ``host_view``: its condition (``unknown`` when it was never
polled successfully, ``stale`` when its last successful health poll is older than its
interval allows, ``failing`` while its health poll fails and it is not yet unreachable, else
its health), the age of its data and a one-line reason. The input is the host actor's live
snapshot as JSON (what the relay sends), so app.js derives the same from the same fields
(``hostView`` there mirrors this module; keep them in step).

Times: ``format_time`` is the one rendering of an instant: in the user's time zone,
``HH:MM`` when it is today there, else ``YYYY-MM-DD HH:MM``; ``time_tag`` wraps it in a
``<time>`` element with the UTC instant on hover (app.js's ``fmtClock`` does the same).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from markupsafe import Markup
from starlette.types import ASGIApp, Receive, Scope, Send

from storage import Database
from storage.display import set_user_time_zone, user_time_zone

from . import audit
from .authz import Principal
from .handle import InvalidInput

UTC = "UTC"


def zone(name: str) -> ZoneInfo:
    """The zone ``name``; UTC for a name this system does not know."""
    try:
        return ZoneInfo(name or UTC)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(UTC)


@functools.cache
def zone_names() -> tuple[str, ...]:
    """The IANA zones a user may choose (sorted; UTC first)."""
    return (UTC, *sorted(n for n in available_timezones() if "/" in n and n != UTC))


def parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def format_time(value: Any, tz: str = UTC, now: dt.datetime | None = None) -> str:
    """``HH:MM`` if ``value`` is today in ``tz``, else ``YYYY-MM-DD HH:MM``; ``—`` for none."""
    at = parse_time(value)
    if at is None:
        return "—"
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    local = at.astimezone(zone(tz))
    today = (now or dt.datetime.now(dt.UTC)).astimezone(zone(tz)).date()
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def utc_text(value: Any) -> str:
    at = parse_time(value)
    if at is None:
        return ""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def time_tag(value: Any, tz: str = UTC, now: dt.datetime | None = None) -> Markup:
    """``<time datetime=ISO title="… UTC">local</time>`` (``—`` for none)."""
    at = parse_time(value)
    if at is None:
        return Markup("—")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        at.isoformat(), utc_text(at), format_time(at, tz, now)
    )


@dataclass(frozen=True)
class At:
    """An instant inside a reason line: text as ``format_time``, on pages a ``time_tag``."""

    value: Any


Line = tuple[str | At, ...]  # a reason line: text and instants


def _plain(parts: list[Line], tz: str, now: dt.datetime) -> str:
    return "; ".join(
        "".join(format_time(x.value, tz, now) if isinstance(x, At) else x for x in part)
        for part in parts
    )


def _marked(parts: list[Line], tz: str, now: dt.datetime) -> Markup:
    return Markup("; ").join(
        Markup("").join(time_tag(x.value, tz, now) if isinstance(x, At) else x for x in part)
        for part in parts
    )


def age(value: Any, now: dt.datetime | None = None) -> str:
    """``4 min ago`` style (``never`` for none)."""
    at = parse_time(value)
    if at is None:
        return "never"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - at).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@dataclass(frozen=True)
class HostView:
    """A host as every page shows it."""

    condition: str  # unknown|stale|failing|halted|paused|healthy|degraded|unreachable
    why: str  # one line: the reason for the condition
    ages: str  # "health as of 1 min ago · patches as of 4 min ago"
    trusted: bool  # the system facts (reboot flag) come from a successful poll
    patches_known: bool = False  # the patch list and counts come from a successful patch poll
    why_html: Markup | None = None  # ``why`` for pages: its times as <time> (UTC on hover)

    def why_line(self) -> Markup:
        """``why`` as pages show it (``why_html``, else the escaped text)."""
        return self.why_html or Markup.escape(self.why)

    def badge(self) -> Markup:
        return Markup('<span class="badge {}">{}</span>').format(self.condition, self.condition)


def current_condition(condition: str, stale_after: Any, now: dt.datetime) -> str:
    """A snapshot's ``condition`` as of ``now``: ``healthy``/``degraded`` data past its
    ``stale_after`` is ``stale`` (cheap: the dashboard counts thousands of hosts with it)."""
    if condition in ("healthy", "degraded"):
        at = parse_time(stale_after)
        if at is not None and now > at:
            return "stale"
    return condition or "unknown"


def host_view(
    live: Mapping[str, Any] | None,
    *,
    health: str = "pending",
    reason: str = "",
    last_seen: dt.datetime | None = None,
    tz: str = UTC,
    now: dt.datetime | None = None,
) -> HostView:
    """The view of one host from its live snapshot (JSON); without one (no actor: removed,
    refused, or the actor system is not running) from its stored ``health``/``last_seen``."""
    now = now or dt.datetime.now(dt.UTC)
    if live is None:
        if last_seen is None or health == "pending":
            return HostView("unknown", "never contacted", "no data yet", False)
        return HostView(health, reason, f"last seen {age(last_seen, now)}", True, True)
    condition, parts = _reason(live, now)
    ages = " · ".join(
        f"{what} as of {age(live.get(key), now)}"
        for what, key in (("health", "health_as_of"), ("patches", "patches_as_of"))
    )
    patches_known = parse_time(live.get("patches_as_of")) is not None
    trusted = parse_time(live.get("health_as_of")) is not None
    return HostView(
        condition,
        _plain(parts, tz, now),
        ages,
        trusted,
        patches_known,
        _marked(parts, tz, now),
    )


def _reason(live: Mapping[str, Any], now: dt.datetime) -> tuple[str, list[Line]]:
    """The condition of a live snapshot and its reason line's parts."""
    condition = current_condition(str(live.get("condition") or ""), live.get("stale_after"), now)
    health_as_of = parse_time(live.get("health_as_of"))
    parts: list[Line] = []
    failing = parse_time(live.get("failing_since"))
    if condition == "unknown":
        parts.append(("never contacted",))
    elif condition == "stale" and live.get("stale_by_patches"):
        parts.append(("no successful patch poll since ", At(live.get("patches_as_of"))))
    elif condition == "stale":
        parts.append(("no successful poll since ", At(health_as_of)))
    elif condition == "paused":
        parts.append(("paused: not polled",))
    elif condition == "halted":  # the actor crashed / restarts / waits: its error, nothing else
        said = str(live.get("summary") or "halted").split(" · ")[0]
        error = str(live.get("last_error") or "")
        parts.append((f"{said}: {error}" if error and error not in said else said,))
    if failing is not None and condition not in ("paused", "halted"):
        used = f" ({live.get('retries_used', 0)} of {live.get('retries_total', 0)} retries"
        next_at = live.get("next_attempt")
        tail: Line = (", next ", At(next_at), ")") if next_at else (")",)
        parts.append(("poll failing since ", At(failing), used, *tail))
    patch_failing = parse_time(live.get("patch_failing_since"))
    if patch_failing is not None and failing is None and condition not in ("paused", "halted"):
        used = f" ({live.get('patch_retries_used', 0)} of {live.get('retries_total', 0)} retries"
        next_at = live.get("patch_next_attempt")
        tail = (", next ", At(next_at), ")") if next_at else (")",)
        parts.append(("patch poll failing since ", At(patch_failing), used, *tail))
    since = live.get("health_since")
    if condition in ("healthy", "degraded", "unreachable") and since:
        parts.append((f"{condition} since ", At(since)))
    detail = str(live.get("health_reason") or "")
    if not detail and failing is not None:
        detail = str(live.get("last_error") or "")
    if detail and condition not in ("healthy", "halted"):
        parts.append((detail,))
    return condition, parts


@dataclass(frozen=True)
class Freshness:
    """A host's condition as of now, with its reason and the instants behind it: what the API,
    the CLI and the summary say (the same rule as the pages' ``host_view``)."""

    condition: str
    why: str
    health_as_of: dt.datetime | None
    patches_as_of: dt.datetime | None
    stale_after: dt.datetime | None
    # The failing lines' facts (the live snapshot's; none without one): since when the health
    # poll, or only the patch poll, fails, the retries used of the ladder (``retries_total``
    # long), the next attempt, and since when the host has its health (last transition).
    failing_since: dt.datetime | None = None
    retries_used: int = 0
    retries_total: int = 0
    next_attempt: dt.datetime | None = None
    patch_failing_since: dt.datetime | None = None
    patch_retries_used: int = 0
    patch_next_attempt: dt.datetime | None = None
    health_since: dt.datetime | None = None


def freshness(
    live: Mapping[str, Any] | None,
    *,
    health: str = "pending",
    reason: str = "",
    last_seen: dt.datetime | None = None,
    stale_s: float | None = None,
    tz: str = UTC,
    now: dt.datetime | None = None,
) -> Freshness:
    """``host_view``'s condition and reason with the instants. Without a live snapshot (the
    CLI, or no actor) the stored health counts as of ``last_seen`` and, given ``stale_s`` (the
    host's stale window), turns ``stale`` once that has passed."""
    now = now or dt.datetime.now(dt.UTC)
    if live is None:
        limit = (
            last_seen + dt.timedelta(seconds=stale_s)
            if last_seen is not None and stale_s is not None
            else None
        )
        view = host_view(None, health=health, reason=reason, last_seen=last_seen, tz=tz, now=now)
        condition = view.condition
        why = view.why
        if condition != "unknown" and limit is not None and now > limit:
            condition = "stale"
            why = f"no successful poll since {format_time(last_seen, tz, now)}"
        return Freshness(condition, why, last_seen, last_seen, limit)
    view = host_view(live, tz=tz, now=now)
    return Freshness(
        view.condition,
        view.why,
        parse_time(live.get("health_as_of")),
        parse_time(live.get("patches_as_of")),
        parse_time(live.get("stale_after")),
        parse_time(live.get("failing_since")),
        int(live.get("retries_used") or 0),
        int(live.get("retries_total") or 0),
        parse_time(live.get("next_attempt")),
        parse_time(live.get("patch_failing_since")),
        int(live.get("patch_retries_used") or 0),
        parse_time(live.get("patch_next_attempt")),
        parse_time(live.get("health_since")),
    )


class UserZones:
    """Each user's time zone (``users.time_zone``), read once per user and process and kept
    current by ``set``: page rendering is synchronous, so the routes call ``ensure`` first."""

    def __init__(self) -> None:
        self._zones: dict[int, str] = {}

    def get(self, user_id: int) -> str:
        return self._zones.get(user_id, UTC)

    def clear(self) -> None:
        """Forget every zone read (they are read again on the next request)."""
        self._zones.clear()

    async def ensure(self, db: Database, user_id: int) -> str:
        if user_id not in self._zones and user_id:
            name = await db.run(user_time_zone, user_id)
            self._zones[user_id] = name if name in zone_names() else UTC  # unknown here: UTC
        return self.get(user_id)

    async def set(self, db: Database, who: Principal, name: str) -> None:
        """Store ``name`` as ``who``'s zone (audited); ``InvalidInput`` for an unknown zone."""
        if name not in zone_names():
            raise InvalidInput("time_zone", "choose a time zone from the list")
        before = self._zones.get(who.user_id, UTC)
        await audit.audited(
            db,
            audit.entry(
                who,
                "user.time_zone.update",
                f"user:{who.username}",
                before={"time_zone": before},
                after={"time_zone": name},
            ),  # fmt: skip
            set_user_time_zone,
            who.user_id,
            name,
        )
        self._zones[who.user_id] = name


class ZoneMiddleware:
    """Reads the session user's time zone before the endpoint runs, for every page (one place:
    page rendering is synchronous, and a zone not read yet would show UTC). Runs after
    ``AuthMiddleware`` has loaded the session."""

    def __init__(self, app: ASGIApp, zones: UserZones, db: Database) -> None:
        self.app = app
        self.zones = zones
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("state", {}).get("session") if scope["type"] == "http" else None
        if session is not None:
            await self.zones.ensure(self.db, session.user.id)
        await self.app(scope, receive, send)


def duration(start: Any, end: Any) -> str:
    """``1 h 2 min``, ``3 min 5 s``, ``12 s`` between two instants (``—`` if either is none)."""
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return "—"
    seconds = max(0, int((b - a).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def version_changes(
    before: Mapping[str, str] | None, after: Mapping[str, str] | None
) -> list[tuple[str, str, str]]:
    """``(package, version before, version after)`` for every package a job changed (``""``
    for installed / removed), by name."""
    if before is None or after is None:
        return []
    names = sorted(set(before) | set(after))
    return [
        (n, before.get(n, ""), after.get(n, "")) for n in names if before.get(n) != after.get(n)
    ]
