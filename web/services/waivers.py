"""Risk waivers: an accepted risk on one host (a package, a CVE, or every patch) with an owner,
a reason and an expiry; counted as compliant only until it expires, always shown separately."""

from __future__ import annotations

import datetime as dt

from storage import NotFound
from storage.reports import (
    WaiverRow,
    create_waiver,
    list_waivers,
    pending_covered,
    revoke_waiver,
)

from .. import audit
from ..authz import Action, require
from ..handle import InvalidInput, Missing
from ..report_models import WaiverCreate
from .base import Principal, System
from .reports import now, scope

# Waivers are recorded by the roles that act on hosts (admins and operators), never auditors.
WAIVE = Action.DEPLOY


async def waivers(sys: System, who: Principal) -> list[WaiverRow]:
    return await sys.db.run(list_waivers, scope(who), True)


async def create(sys: System, who: Principal, data: WaiverCreate) -> tuple[int, list[str]]:
    """The new waiver's id and warnings (nothing it covers is pending on the host now). Raises
    ``InvalidInput`` for an expiry in the past and ``Missing`` for an unknown host."""
    require(who, WAIVE)
    if data.expires_at <= now():
        raise InvalidInput("expires_at", "must be in the future")
    if data.expires_at > now() + dt.timedelta(days=3660):
        raise InvalidInput("expires_at", "must be within 10 years")
    package = data.package.strip()
    try:
        waiver_id = await audit.audited(
            sys,
            lambda w: audit.entry(who, "waiver.create", f"waiver:{w}", after=data.model_dump()),
            create_waiver, scope(who), data.host_id, package, data.cve,
            data.owner, data.reason, data.expires_at, who.username,
        )  # fmt: skip
    except NotFound:
        raise Missing(f"no host with id {data.host_id}") from None
    warnings = []
    if (package or data.cve) and not await sys.db.run(
        pending_covered, data.host_id, package, data.cve
    ):
        what = " naming ".join(v for v in (package, data.cve) if v)
        warnings.append(
            f"no pending patch of {what} on this host now: the waiver applies only if one appears"
        )
    return waiver_id, warnings


async def revoke(sys: System, who: Principal, waiver_id: int) -> None:
    require(who, WAIVE)
    try:
        await audit.audited(
            sys, audit.entry(who, "waiver.revoke", f"waiver:{waiver_id}"),
            revoke_waiver, scope(who), waiver_id, who.username,
        )  # fmt: skip
    except NotFound as exc:
        raise Missing(str(exc)) from None
