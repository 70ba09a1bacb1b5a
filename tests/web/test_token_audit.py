"""The JWT exchange, refresh rotation and refresh-token reuse are audited with the change they
make; refused unknown bearer credentials are recorded at most once a minute per address (an
anonymous flood must not queue every audited action behind the chain's lock)."""

from __future__ import annotations

import datetime as dt

import httpx2
import pytest

from storage.audit import AuditFilter, list_entries

from .conftest import WebRig
from .test_jwt import Clock, clock, exchange, http, refresh  # noqa: F401  (fixtures)
from .test_tokens import token_for

pytestmark = pytest.mark.timeout(120)


async def actions(rig: WebRig, prefix: str) -> list[tuple[str, str, str, str]]:
    entries, _ = await rig.db.run(list_entries, AuditFilter(action=prefix))
    return [(e.action, e.actor, e.target, e.outcome) for e in reversed(entries)]


async def test_exchange_refresh_and_reuse_are_audited_without_the_secrets(
    web_rig: WebRig,
    http: httpx2.AsyncClient,  # noqa: F811
) -> None:
    secret = await token_for(web_rig, 1, "read")
    grant = await exchange(http, secret)
    rotated = await refresh(http, grant["refresh_token"])
    assert rotated.status_code == 200
    assert (await refresh(http, grant["refresh_token"])).status_code == 401  # reused: stolen
    seen = await actions(web_rig, "token.")
    token = seen[0][2]  # token.create's target: token:ID
    assert [(a, t, o) for a, _, t, o in seen[1:]] == [
        ("token.exchange", token, "ok"),
        ("token.refresh", token, "ok"),
        ("token.refresh.reuse", token, "denied"),
    ]
    assert seen[1][1].startswith(f"{token}:") and seen[1][1].endswith("@admin")  # the token
    assert seen[2][1] == seen[3][1] == "anonymous"  # a refresh token proves no one by itself
    entries, _ = await web_rig.db.run(list_entries, AuditFilter(action="token."))
    for value in (secret, grant["refresh_token"], rotated.json()["refresh_token"]):
        assert all(value not in repr(e) for e in entries)


async def test_unknown_bearer_refusals_are_recorded_once_a_minute_per_address_with_a_count(
    web_rig: WebRig,
    http: httpx2.AsyncClient,  # noqa: F811
    clock: Clock,  # noqa: F811
) -> None:
    bogus = {"authorization": "Bearer pm_not-a-token"}
    for _ in range(50):
        assert (await http.get("/api/v1/hosts", headers=bogus)).status_code == 401
    assert await actions(web_rig, "token.use") == [
        ("token.use", "anonymous", "GET /api/v1/hosts", "denied")
    ]
    clock.advance(dt.timedelta(minutes=1))
    assert (await http.get("/api/v1/hosts", headers=bogus)).status_code == 401
    entries, _ = await web_rig.db.run(list_entries, AuditFilter(action="token.use"))
    assert len(entries) == 2
    assert "and 49 more from this address" in entries[0].detail
