"""The deployment plan (issue 16 point 2): one function computes, for a draft job, per host
which packages change from which version to which (from the last poll), whether it reboots,
whether it is skipped and why, its batch and the window it runs in. The Deploy page, the
``POST /api/v1/jobs/plan`` API and job creation all call ``compute``, so what the preview shows
is what the job is made of (the job stores it; rows of skipped hosts start skipped).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from maintenance import (
    NO_WINDOW_HORIZON,
    Interval,
    Pending,
    WindowRule,
    assign_batches,
    chosen,
    occurrences,
)
from storage import (
    PlanHost,
    host_window_map,
    list_blackouts,
    list_windows,
    plan_hosts,
)

from ..freshness import freshness
from ..models import JobCreate
from ..serialize import to_json
from .base import System

# Why a host gets no request (its row starts skipped): the codes the coordinator uses too.
PAUSED = "PAUSED"
NO_WINDOW = "NO_WINDOW"
# Nothing the job selects was pending at the host's last poll: no request is sent and its row
# starts *succeeded* (nothing to do is not a failure: a job whose every host had nothing to do
# finishes succeeded). The plan lists it as skipped with this code; the row keeps the code.
# Only for an apply-now job and a host whose data is trustworthy now (condition ``FRESH``): a
# host that is down, failing, stale, halted or never seen, or a window job (the window may be
# days away), gets a row that runs: the host re-checks its pending list when the job runs and
# ends succeeded with nothing to do if there still is nothing.
NOTHING_PENDING = "NOTHING_PENDING"
FRESH = ("healthy", "degraded")  # conditions whose patch data is current


@dataclass(frozen=True)
class Change:
    name: str
    from_version: str
    to_version: str
    severity: str
    requires_reboot: bool


@dataclass(frozen=True)
class HostPlan:
    host_id: int
    name: str  # the display name (or the registered name)
    address: str
    batch: int
    changes: list[Change] = field(default_factory=list)
    reboot: str = ""  # "reboots" | "needs a reboot (not allowed)" | ""
    skip: str = ""  # PAUSED | NO_WINDOW | NOTHING_PENDING, or "" when the host runs
    reason: str = ""  # one line: why skipped, or what to know (never polled, nothing pending)
    window_start: dt.datetime | None = None  # the window occurrence it runs in (window jobs)
    window_end: dt.datetime | None = None


@dataclass(frozen=True)
class BatchPlan:
    number: int
    hosts: int
    runs: int  # hosts that are not skipped
    starts: dt.datetime | None  # the earliest window of its hosts (None: apply now / none)


@dataclass(frozen=True)
class Plan:
    hosts: list[HostPlan]
    batches: list[BatchPlan]
    changes: int  # package changes over all hosts that run
    reboots: int  # hosts that will reboot
    skipped: int
    # The job's options that shape what happens but not the rows (reboot delay, failure
    # threshold, canary, ...): part of the digest, so a changed option is a changed plan.
    options: dict[str, Any] = field(default_factory=dict)

    def predicted(self) -> str:
        """The job's final status if every host that runs succeeds, by the roll-up's rule
        (``actors.rollout.roll_up``): hosts with nothing to do (NOTHING_PENDING) count neither
        way; any PAUSED / NO_WINDOW host makes it ``partially_failed``, or ``failed`` when no
        host runs at all; ``succeeded`` otherwise (also when every host has nothing to do)."""
        runs = sum(1 for h in self.hosts if not h.skip)
        skipped = sum(1 for h in self.hosts if h.skip and h.skip != NOTHING_PENDING)
        if not skipped:
            return "succeeded"
        return "partially_failed" if runs else "failed"

    def breakdown(self, names: int = 3) -> list[tuple[str, int, list[str]]]:
        """Why hosts are skipped, by code: (code, how many, the first ``names`` host names),
        the most frequent first (the Deploy page's summary on a large fleet)."""
        found: dict[str, list[str]] = {}
        for h in self.hosts:
            if h.skip:
                found.setdefault(h.skip, []).append(h.name)
        ranked = sorted(found.items(), key=lambda item: (-len(item[1]), item[0]))
        return [(code, len(hosts), hosts[:names]) for code, hosts in ranked]

    def problems_first(self) -> list[HostPlan]:
        """The hosts with skipped rows first, then those with something to know (a reason),
        then the rest, each in plan order (the Deploy page lists the first 500 of these)."""
        return sorted(self.hosts, key=lambda h: 0 if h.skip else 1 if h.reason else 2)

    def stored(self) -> dict[str, Any]:
        """The plan as the job keeps it (``jobs.plan``)."""
        return {
            "hosts": [
                {
                    "host_id": h.host_id,
                    "batch": h.batch,
                    "skip": h.skip,
                    "reason": h.reason,
                    "reboot": h.reboot,
                    "window_start": h.window_start.isoformat() if h.window_start else None,
                    "changes": [[c.name, c.from_version, c.to_version] for c in h.changes],
                }
                for h in self.hosts
            ]
        }

    def digest(self) -> str:
        """A short fingerprint of the plan (what the Deploy form confirms): job creation
        refuses when the plan it computes has another one."""
        # Without the reasons: they carry the live condition's wording and times ("next
        # 21:26"), which change while nothing the job would do does.
        hosts = [{k: v for k, v in h.items() if k != "reason"} for h in self.stored()["hosts"]]
        whole = {"hosts": hosts, "options": self.options}
        text = json.dumps(whole, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def planned(self) -> dict[int, dict[str, str]]:
        """Host id → {package: version} for the rows of hosts that run (patch jobs)."""
        return {
            h.host_id: {c.name: c.to_version for c in h.changes} for h in self.hosts if not h.skip
        }

    def skips(self) -> dict[int, tuple[str, str]]:
        """Host id → (code, reason) of the rows that start skipped."""
        return {
            h.host_id: (h.skip, h.reason)
            for h in self.hosts
            if h.skip and h.skip != NOTHING_PENDING
        }

    def nothing(self) -> dict[int, tuple[str, str]]:
        """Host id → (NOTHING_PENDING, reason): the rows that start succeeded."""
        return {h.host_id: (h.skip, h.reason) for h in self.hosts if h.skip == NOTHING_PENDING}


@dataclass(frozen=True)
class StoredHost:
    """One host of a job's stored plan (``Plan.stored``), as the job page and API show it."""

    host_id: int
    batch: int
    skip: str
    reason: str
    reboot: str
    window_start: dt.datetime | None
    changes: list[tuple[str, str, str]]  # (package, from version, to version)


def stored_hosts(plan: Mapping[str, Any] | None, host_ids: set[int]) -> dict[int, StoredHost]:
    """The hosts of ``host_ids`` (the rows the viewer may see) in a stored plan, by id."""
    found: dict[int, StoredHost] = {}
    for h in (plan or {}).get("hosts", []):
        if h.get("host_id") not in host_ids:
            continue
        start = h.get("window_start")
        found[h["host_id"]] = StoredHost(
            h["host_id"],
            int(h.get("batch", 0)),
            str(h.get("skip", "")),
            str(h.get("reason", "")),
            str(h.get("reboot", "")),
            dt.datetime.fromisoformat(start) if start else None,
            [(str(c[0]), str(c[1]), str(c[2])) for c in h.get("changes", [])],
        )
    return found


def versus(planned: StoredHost | None, state: str, done: Sequence[tuple[str, str, str]]) -> str:
    """What a finished row did against its plan, in one line: "as planned", or how it
    differs (a planned change not made, made to another version, or a change not planned);
    "" when there is no plan or the row has not succeeded."""
    if planned is None or state != "succeeded":
        return ""
    wanted = {name: new for name, _, new in planned.changes}
    got = {name: new for name, _, new in done}
    notes = []
    for name, version in sorted(wanted.items()):
        if name not in got:
            notes.append(f"{name} not changed")
        elif got[name] != version:
            notes.append(f"{name} went to {got[name] or '(removed)'}, not {version}")
    notes += [f"{name} also changed" for name in sorted(set(got) - set(wanted))]
    if not notes:
        return "as planned" + (" (nothing to do)" if not wanted and not got else "")
    return "differs from the plan: " + "; ".join(notes)


def _pending(host: PlanHost) -> list[Pending]:
    return [
        Pending(p.name, p.current_version, p.available_version, p.severity, p.requires_reboot)
        for p in host.pending
    ]


async def _windows(
    sys: System, hosts: Sequence[PlanHost], numbers: Sequence[int], now: dt.datetime
) -> dict[int, Interval | None]:
    """Each host's window occurrence (``host_windows``) from the stored windows and blackouts."""
    by_host = await sys.db.run(host_window_map)
    rules = {w.id: WindowRule.from_columns(w) for w in await sys.db.run(list_windows) if w.enabled}
    shut = [Interval(b.starts_at, b.ends_at) for b in await sys.db.run(list_blackouts)]
    members = [tuple(w for w in by_host.get(h.id, []) if w in rules) for h in hosts]
    paused = [_paused(sys, h) for h in hosts]
    found = host_windows(members, numbers, paused, rules, shut, now)
    return {h.id: window for h, window in zip(hosts, found, strict=True)}


# How far ahead each try looks for a window before looking further (the last is the horizon):
# most hosts have a window within days, so their search stops there.
_REACH = (dt.timedelta(days=1), dt.timedelta(days=8), NO_WINDOW_HORIZON)
_TICK = dt.timedelta(seconds=1)  # ``open_window`` looks this far past the instant


class _Windows:
    """Window occurrences computed once per window and search range (not per host), with only
    the blackouts that meet the range."""

    def __init__(self, rules: Mapping[int, WindowRule], blackouts: Sequence[Interval]) -> None:
        self.rules = rules
        self.blackouts = sorted(blackouts)
        self.longest = max((r.duration for r in rules.values()), default=dt.timedelta(0))
        self.pieces: dict[tuple[int, dt.datetime, dt.datetime], list[Interval]] = {}
        self.cut: dict[tuple[dt.datetime, dt.datetime], list[Interval]] = {}

    def of(self, window_id: int, start: dt.datetime, end: dt.datetime) -> list[Interval]:
        key = (window_id, start, end)
        if key not in self.pieces:
            rule = self.rules[window_id]
            near = self.cut.get((start, end))
            if near is None:
                # As far back as ``occurrences`` looks (a window open at ``start`` began up
                # to its duration before; the look-back adds another and a day).
                low = start - 2 * self.longest - dt.timedelta(days=2)
                # A window starting before ``end`` runs on up to its duration after it.
                high = end + self.longest
                near = [b for b in self.blackouts if b.end > low and b.start < high]
                self.cut[(start, end)] = near
            self.pieces[key] = occurrences(rule, start - rule.duration, end, near)
        return self.pieces[key]

    def first(self, window_ids: Sequence[int], after: dt.datetime) -> Interval | None:
        """The union of the windows' occurrences open at ``after``, or else the first to
        start after it, within ``NO_WINDOW_HORIZON`` (what ``open_window`` then
        ``next_window`` give); the search widens only while nothing is found."""
        for reach in _REACH:
            end = after + reach
            pieces = heapq.merge(*(self.of(w, after, end) for w in window_ids))
            current: Interval | None = None
            for piece in pieces:
                if current is not None:
                    if current.contains(after) and piece.start >= after + _TICK:
                        break  # open now: its end as ``open_window`` sees it
                    if piece.start <= current.end:
                        current = Interval(current.start, max(current.end, piece.end))
                        continue
                    if current.contains(after) or current.start > after:
                        break
                current = piece
            if current is None or not (current.contains(after) or current.start > after):
                continue
            if current.contains(after) or current.end < end or reach == _REACH[-1]:
                return current  # not cut short by the end of the range searched
        return None


def host_windows(
    members: Sequence[Sequence[int]],
    numbers: Sequence[int],
    paused: Sequence[bool],
    rules: Mapping[int, WindowRule],
    blackouts: Sequence[Interval],
    now: dt.datetime,
) -> list[Interval | None]:
    """Each host's window occurrence over its enabled windows (``members``: its own and its
    groups'), blackouts cut out, within ``NO_WINDOW_HORIZON``. The coordinator starts batch
    k only once batch k-1 is final, so batch 0 gets the window open now or next, and batch k
    the one open at or next after the latest window start of batch k-1 (not before it).
    Occurrences are computed once per window (``_Windows``), the union once per distinct set
    of windows and instant (hosts of one group share it)."""
    windows = _Windows(rules, blackouts)
    found: dict[tuple[tuple[int, ...], dt.datetime], Interval | None] = {}
    result: list[Interval | None] = [None] * len(numbers)
    after = now
    for number in sorted(set(numbers)):
        latest = after
        for index, batch in enumerate(numbers):
            if batch != number:
                continue
            key = (tuple(sorted(set(members[index]))), after)
            if key not in found:
                found[key] = windows.first(key[0], after) if key[0] else None
            result[index] = window = found[key]
            if window is not None and not paused[index]:
                latest = max(latest, window.start)
        after = latest
    return result


async def compute(
    sys: System, data: JobCreate, host_ids: Sequence[int], now: dt.datetime | None = None
) -> Plan:
    """The plan of job ``data`` over ``host_ids`` (already resolved within the principal's
    scope, in the order the job's rows take): batches as the job cuts them, each host's
    changes (patch jobs), reboot, skip reason and window."""
    now = now or dt.datetime.now(dt.UTC)
    hosts = await sys.db.run(plan_hosts, host_ids)
    numbers = assign_batches(
        len(hosts),
        batch_size=data.batch_size,
        batch_percent=data.batch_percent,
        canary=data.canary,
    )
    windows = await _windows(sys, hosts, numbers, now) if data.schedule == "window" else {}
    names = [p if isinstance(p, str) else p.name for p in data.packages]
    plans: list[HostPlan] = []
    for host, batch in zip(hosts, numbers, strict=True):
        changes: list[Change] = []
        reason = ""
        if data.kind == "patch":
            picked = chosen(_pending(host), data.selection, names)
            changes = [
                Change(p.name, p.current_version, p.available_version, p.severity,
                       p.requires_reboot)
                for p in picked
            ]  # fmt: skip
            if host.last_patch_poll_at is None:
                reason = "patches not known yet (never polled): it gets what is pending then"
            elif not picked:
                reason = (
                    "nothing selected is pending (at the last poll): no request is sent,"
                    " it ends succeeded with nothing to do"
                )
        # The agent reboots after patching when a patch needs it or the host's reboot marker
        # is already set (agent API §3.11), so a host waiting for a reboot reboots too.
        patches = data.kind == "patch" and (bool(changes) or host.last_patch_poll_at is None)
        needs_reboot = (
            any(c.requires_reboot for c in changes)
            or data.kind == "reboot"
            or (patches and host.pending_reboot)
        )
        reboot = ""
        if needs_reboot:
            reboot = "reboots" if data.allow_reboot or data.kind == "reboot" else (
                "needs a reboot (not allowed: it stays pending)"
            )  # fmt: skip
        condition, why = _condition(sys, host, now)
        fresh = condition in FRESH
        nothing = data.kind == "patch" and host.last_patch_poll_at is not None and not changes
        if nothing and not (fresh and data.schedule == "now"):
            reason = (
                "nothing selected was pending at the last poll: the host re-checks when the job"
                + (" runs" if data.schedule == "now" else "'s window opens")
                + "; still nothing, it ends succeeded with nothing to do"
            )
        skip, start, end = "", None, None
        if nothing and fresh and data.schedule == "now":
            skip = NOTHING_PENDING  # whatever else holds, nothing would be sent
        elif data.schedule == "window":
            found = windows[host.id]
            if found is None:
                skip = NO_WINDOW
                reason = f"no enabled maintenance window in the next {NO_WINDOW_HORIZON.days} days"
            else:
                start, end = found.start, found.end
        if skip == NOTHING_PENDING:
            pass
        elif _paused(sys, host) and data.schedule == "window":
            # The coordinator checks a pause when the window is open: resumed in time, it runs.
            if not skip:
                reason = "paused now: it runs only if resumed before its window closes"
        elif _paused(sys, host):
            skip, reason = PAUSED, "the host is paused"
        elif host.health == "unreachable" and data.schedule == "now":
            # Re-checked when the job runs (the host's runner asks the agent first, along the
            # host's backoff ladder): back by then, it runs; still down, the row fails
            # HOST_UNREACHABLE.
            reason = (
                "unreachable at its last poll"
                + (f" ({host.health_reason})" if host.health_reason else "")
                + ": tried again when the job runs; fails HOST_UNREACHABLE if still unreachable"
            )
        elif host.health == "unreachable" and not skip:
            reason = "unreachable now; tried when its window opens"
        if not fresh and condition != "paused" and why and skip != PAUSED:
            # The live condition: what the plan computed from may be out of date.
            note = f"{condition}: {why} — data may be out of date"
            reason = f"{reason}; {note}" if reason else note
        plans.append(
            HostPlan(
                host.id,
                host.display_name or host.name,
                host.address if host.address != (host.display_name or host.name) else "",
                batch,
                changes,
                reboot if not skip else "",
                skip,
                reason,
                start,
                end,
            )
        )
    return Plan(
        plans,
        _batches(plans),
        sum(len(h.changes) for h in plans if not h.skip),
        sum(1 for h in plans if h.reboot == "reboots"),
        sum(1 for h in plans if h.skip),
        {
            "kind": data.kind, "schedule": data.schedule, "allow_reboot": data.allow_reboot,
            "reboot_delay_s": data.reboot_delay_s, "failure_threshold": data.failure_threshold,
            "canary": data.canary,
        },
    )  # fmt: skip


def _condition(sys: System, host: PlanHost, now: dt.datetime) -> tuple[str, str]:
    """The host's condition now and why (as the host list shows it, times in UTC); a host
    without a live poller is ``unknown`` (nothing refreshes its data)."""
    live = sys.handle.snapshot(host.id)
    if live is None:
        return "unknown", "no live poller for this host"
    fresh = freshness(to_json(live), now=now)
    return fresh.condition, fresh.why


def _paused(sys: System, host: PlanHost) -> bool:
    """Paused from the UI (the host row) or by the configuration (its effective policy, as
    the coordinator sees it)."""
    effective = sys.handle.effective_policy(host.id)
    return host.paused or (effective is not None and effective.policy.paused)


def _batches(plans: list[HostPlan]) -> list[BatchPlan]:
    found: list[BatchPlan] = []
    for number in sorted({h.batch for h in plans}):
        members = [h for h in plans if h.batch == number]
        starts = [h.window_start for h in members if h.window_start is not None and not h.skip]
        found.append(
            BatchPlan(
                number,
                len(members),
                sum(1 for h in members if not h.skip),
                min(starts) if starts else None,
            )
        )
    return found
