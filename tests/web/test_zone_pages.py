"""Issue 16 point 4 and 6 on the pages that were left in UTC: every time shown in the user's time
zone (profile) with UTC on hover, the month calendar drawn in that zone, and the host display
name (address as secondary text) in reports, waivers, audit targets and windows."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import psycopg

from maintenance import Interval, Marked, month_grid
from storage import insert_host
from storage.certificates import create_enrolment, record_certificate
from storage.outbox import NewMessage, queue_messages, record_error

from .conftest import WebRig, form_token

KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: a minute offset shows
TIME_TAG = re.compile(r'<time datetime="([^"]+)" title="([^"]+) UTC">([^<]+)</time>')


async def use_zone(client: httpx2.AsyncClient, zone: str) -> None:
    profile = await client.get("/profile")
    saved = await client.post(
        "/profile/time-zone", data={"csrf_token": form_token(profile.text), "time_zone": zone}
    )
    assert saved.status_code == 303, saved.text


def assert_zoned(page: str, at_least: int = 1) -> int:
    """Every ``<time>`` of ``page`` reads in Kolkata time with its UTC instant on hover, and no
    time is shown as text labelled UTC. Returns how many times were checked."""
    tags = TIME_TAG.findall(page)
    assert len(tags) >= at_least, page
    for iso, hover, text in tags:
        at = dt.datetime.fromisoformat(iso)
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        assert hover == at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"), (iso, hover)
        local = at.astimezone(KOLKATA)
        assert text in (local.strftime("%H:%M"), local.strftime("%Y-%m-%d %H:%M")), (iso, text)
    visible = re.sub(r"<[^>]*>", " ", re.sub(r"<script.*?</script>", "", page, flags=re.S))
    labelled = re.findall(r"\d{2}:\d{2}(?::\d{2})?\s*UTC\b", html.unescape(visible))
    assert not labelled, labelled
    return len(tags)


async def seed(web_rig: WebRig, client: httpx2.AsyncClient) -> int:
    """A host, a waiver, a window, a blackout, a locked user, an outbox message with an error,
    a pending enrolment and an API token: something with a time on every page."""
    db = web_rig.db
    host_id = await db.run(
        lambda c: insert_host(c, name="127.90.0.5", address="127.90.0.5", display_name="db-05").id
    )
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    waiver = await client.post(
        "/api/v1/waivers",
        json={"host_id": host_id, "owner": "ops", "reason": "vendor fix pending",
              "expires_at": soon.isoformat()},
    )  # fmt: skip
    assert waiver.status_code == 201, waiver.text
    blackout = await client.post(
        "/api/v1/blackouts",
        json={"name": "freeze", "starts_at": soon.isoformat(),
              "ends_at": (soon + dt.timedelta(hours=5)).isoformat()},
    )  # fmt: skip
    assert blackout.status_code == 201, blackout.text
    user = await client.post("/api/v1/users", json={"username": "carol", "role": "operator"})
    assert user.status_code == 201, user.text
    token = await client.post("/api/v1/tokens", json={"name": "ci", "scope": "read"})
    assert token.status_code == 201, token.text

    def write(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE users SET locked_until = now() + interval '2 hours' WHERE username = 'carol'"
        )
        queue_messages(conn, [NewMessage("ops@example.com", "hi", "body", 1)], [], soon)
        record_error(conn, "connection refused")
        create_enrolment(
            conn, token_sha256="ab" * 32, machine_id="m-zone", fqdn="new.example.com",
            ip_address="127.90.0.9", hostname="new", os_details={}, source_address="127.0.0.1",
            expires_at=soon,
        )  # fmt: skip
        record_certificate(
            conn, serial=424242, kind="agent_server", subject="CN=db-05", sans=["127.90.0.5"],
            not_before=soon - dt.timedelta(days=30), not_after=soon + dt.timedelta(days=300),
            cert_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )  # fmt: skip

    await db.run(write)
    return host_id


async def test_every_page_showing_times_shows_them_in_the_users_zone_with_utc_on_hover(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await seed(web_rig, client)
    await use_zone(client, "Asia/Kolkata")
    verified = await client.post(
        "/audit/verify", data={"csrf_token": client.headers["x-csrf-token"]}
    )
    assert verified.status_code == 303
    pages = {
        "/audit": 3,
        "/reports?kind=compliance": 2,  # as of, the waiver's expiry
        "/reports?kind=patch-history": 1,
        "/reports?kind=exposure": 1,
        "/reports?kind=reboots": 1,
        "/windows": 2,  # the blackout's start and end
        "/waivers": 2,  # as of, the expiry
        "/users": 3,  # carol's lock, when each user changed
        "/notifications": 2,  # the last error, the message
        "/enrolments": 1,
        "/certificates": 1,
        "/tokens": 2,
        "/discovery": 0,
    }
    for path, at_least in pages.items():
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert_zoned(response.text, at_least)


async def test_the_month_calendar_days_start_at_the_users_local_midnight(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    # 17:30-19:30 UTC on 2026-12-10 is 23:00-01:00 in Kolkata: two local days.
    host_id = await web_rig.db.run(lambda c: insert_host(c, name="127.90.0.6", address=None).id)
    window = await client.post(
        "/api/v1/windows",
        json={"name": "late", "recurrence": "once", "start_date": "2026-12-10",
              "start_time": "17:30", "duration_minutes": 120, "timezone": "UTC",
              "weekdays": [], "enabled": True, "host_id": host_id},
    )  # fmt: skip
    assert window.status_code == 201, window.text
    await use_zone(client, "Asia/Kolkata")
    page = (await client.get("/windows?month=2026-12")).text
    assert "(Asia/Kolkata)" in page
    assert "23:00\u201324:00 late" in day_cell(page, "2026-12-10")
    assert "00:00\u201301:00 late" in day_cell(page, "2026-12-11")
    assert "17:30" not in day_cell(page, "2026-12-10")
    # each clock time carries its UTC instant on hover
    hover = 'datetime="2026-12-10T17:30:00+00:00" title="2026-12-10 17:30:00 UTC">23:00'
    assert f"<time {hover}" in page


def day_cell(page: str, date: str) -> str:
    found = re.search(rf'data-date="{date}">(.*?)</td>', page, re.S)
    assert found is not None, date
    return re.sub(r"<[^>]+>", "", found[1])  # the text shown (times carry UTC on hover)


def test_month_grid_in_a_zone_splits_a_window_at_local_midnight() -> None:
    start = dt.datetime(2026, 12, 10, 17, 30, tzinfo=dt.UTC)
    marked = [Marked("late", Interval(start, start + dt.timedelta(hours=2)))]
    weeks = month_grid(2026, 12, marked, [], KOLKATA)
    days = {d.date: d for week in weeks for d in week}
    assert [(p.start, p.end) for p in days[dt.date(2026, 12, 10)].windows] == [("23:00", "24:00")]
    assert [(p.start, p.end) for p in days[dt.date(2026, 12, 11)].windows] == [("00:00", "01:00")]


def test_month_grid_in_a_zone_with_a_dst_change_has_a_23_hour_day() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 2026-03-29: clocks go from 02:00 to 03:00
    start = dt.datetime(2026, 3, 28, 22, 0, tzinfo=dt.UTC)  # 23:00 in Berlin
    marked = [Marked("all day", Interval(start, start + dt.timedelta(hours=48)))]
    weeks = month_grid(2026, 3, marked, [], berlin)
    days = {d.date: d for week in weeks for d in week}
    assert [(p.start, p.end) for p in days[dt.date(2026, 3, 29)].windows] == [("00:00", "24:00")]
    # 48 hours from 23:00 on the 28th end at local midnight after the 30th (one hour was skipped).
    assert [(p.start, p.end) for p in days[dt.date(2026, 3, 28)].windows] == [("23:00", "24:00")]
    assert [(p.start, p.end) for p in days[dt.date(2026, 3, 30)].windows] == [("00:00", "24:00")]
    assert days[dt.date(2026, 3, 31)].windows == ()


# -- one display name everywhere, natural order (points 3 and 4) -------------------------------

SHOWN = ["127.90.1.3", "web2", "web10"]  # natural order of the shown names
ADDRESSES = ["127.90.1.3", "127.90.1.2", "127.90.1.10"]
PAIRS = list(zip(SHOWN, ADDRESSES, strict=True))


async def hosts_out_of_order(db: Any) -> list[int]:
    """Three hosts whose ids run opposite to the natural order of their shown names, each with
    a pending reboot and one open critical patch; their ids in the order of ``SHOWN``."""
    ids: dict[str, int] = {}
    for address, display in (("127.90.1.10", "web10"), ("127.90.1.2", "web2"), ("127.90.1.3", "")):
        row = await db.run(
            lambda c, a=address, d=display: insert_host(c, name=a, address=a, display_name=d)
        )
        ids[display or address] = row.id

    def mark(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "UPDATE hosts SET pending_reboot = true WHERE id = ANY(%s)", (list(ids.values()),)
        )
        for host_id in ids.values():
            conn.execute(
                "INSERT INTO host_patches (host_id, name, severity, cve_ids, first_seen_at)"
                " VALUES (%s, 'openssl', 'critical', '{CVE-2026-0001}', now() - interval '3 days')",
                (host_id,),
            )

    await db.run(mark)
    return [ids[name] for name in SHOWN]


async def test_reports_show_display_names_with_addresses_in_natural_order(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await hosts_out_of_order(web_rig.db)
    compliance = (await client.get("/api/v1/reports/compliance?format=json")).json()
    assert [h["display_name"] for h in compliance["hosts"]] == SHOWN
    assert [h["address"] for h in compliance["hosts"]] == ADDRESSES
    reboots = (await client.get("/api/v1/reports/reboots?format=json")).json()
    assert [(i["host"], i["address"]) for i in reboots["items"]] == PAIRS
    exposure = (await client.get("/api/v1/reports/exposure?format=json")).json()
    assert [(i["host"], i["address"]) for i in exposure["items"]] == PAIRS
    page = (await client.get("/reports?kind=reboots")).text
    assert [page.index(f">{name}</a>") for name in SHOWN] == sorted(
        page.index(f">{name}</a>") for name in SHOWN
    )
    assert '<div class="muted small">127.90.1.2</div>' in page


async def test_report_csv_has_the_display_name_and_an_address_column(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await hosts_out_of_order(web_rig.db)
    for kind in ("compliance", "reboots", "exposure"):
        lines = (await client.get(f"/api/v1/reports/{kind}?format=csv")).text.splitlines()
        header = lines[0].split(",")
        assert "address" in header, (kind, header)
        rows = [line.split(",") for line in lines[1:]]
        host, address = header.index("host"), header.index("address")
        if kind == "exposure":  # streamed by patch id
            rows.sort(key=lambda r: SHOWN.index(r[host]))
        assert [(r[host], r[address]) for r in rows] == PAIRS, kind


async def test_waivers_page_names_the_host_by_display_name_with_its_address(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await hosts_out_of_order(web_rig.db)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
    made = await client.post(
        "/api/v1/waivers",
        json={"host_id": ids[1], "owner": "ops", "reason": "r", "expires_at": soon},
    )
    assert made.status_code == 201, made.text
    page = (await client.get("/waivers")).text
    assert f'<a href="/hosts/{ids[1]}">web2</a>' in page
    assert "127.90.1.2" in page
    listed = (await client.get("/api/v1/waivers")).json()["waivers"]
    assert [(w["host"], w["address"]) for w in listed] == [("web2", "127.90.1.2")]


async def test_an_audit_entry_on_a_host_names_it_while_the_host_exists(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    added = await client.post(
        "/api/v1/hosts", json={"name": "127.90.1.20", "display_name": "mail-1"}
    )
    assert added.status_code == 201, added.text
    host_id = added.json()["id"]
    page = (await client.get(f"/audit?target=host:{host_id}")).text
    cell = re.search(rf'<span class="mono">host:{host_id}</span>(.*?)</td>', page, re.S)
    assert cell is not None, page
    assert "mail-1" in cell[1] and "127.90.1.20" in cell[1]  # the address beside it
    assert (await client.delete(f"/api/v1/hosts/{host_id}")).status_code == 204
    page = (await client.get(f"/audit?target=host:{host_id}")).text
    assert "host.remove" in page
    assert 'class="small host-name"' not in page  # removed: the id alone


async def test_windows_list_applies_to_shows_the_host_display_name(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await hosts_out_of_order(web_rig.db)
    made = await client.post(
        "/api/v1/windows",
        json={"name": "", "recurrence": "daily", "start_date": "2026-12-01",
              "start_time": "02:00", "duration_minutes": 60, "timezone": "UTC",
              "weekdays": [], "enabled": True, "host_id": ids[1]},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    page = (await client.get("/windows")).text
    row = re.search(rf'<tr id="window-{made.json()["id"]}".*?</tr>', page, re.S)
    assert row is not None and "web2" in row[0], page


# -- times typed on a page are in the user's zone too ------------------------------------------


async def test_page_date_time_inputs_are_read_in_the_users_zone(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host_id = await web_rig.db.run(
        lambda c: insert_host(c, name="127.90.0.7", address="127.90.0.7").id
    )
    await use_zone(client, "Asia/Kolkata")
    csrf = client.headers["x-csrf-token"]
    page = (await client.get("/windows")).text
    assert "From (Asia/Kolkata)" in page
    added = await client.post(
        "/blackouts",
        data={"csrf_token": csrf, "name": "freeze", "starts_at": "2026-12-24T10:00",
              "ends_at": "2026-12-24T12:00"},
    )  # fmt: skip
    assert added.status_code == 303, added.text
    blackout = (await client.get("/api/v1/blackouts")).json()["blackouts"][0]
    assert dt.datetime.fromisoformat(blackout["starts_at"]) == dt.datetime(
        2026, 12, 24, 4, 30, tzinfo=dt.UTC
    )
    made = await client.post(
        "/waivers",
        data={"csrf_token": csrf, "host_id": str(host_id), "owner": "ops", "reason": "r",
              "expires_at": "2030-01-01T05:30"},
    )  # fmt: skip
    assert made.status_code == 303, made.text
    waiver = (await client.get("/api/v1/waivers")).json()["waivers"][0]
    assert dt.datetime.fromisoformat(waiver["expires_at"]) == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    # An hour ago in India: read as UTC it would be hours ahead and match nothing.
    since = (dt.datetime.now(KOLKATA) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    audit = (await client.get("/audit", params={"since": since, "action": "waiver."})).text
    assert "waiver.create" in audit
    assert "since=" + since[:10] in html.unescape(audit) and "%2B05%3A30" in audit  # export link
