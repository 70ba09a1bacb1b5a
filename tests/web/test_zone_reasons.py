"""Issue 16 point 4, review rvA: times inside one-line reasons (compliance "patch data stale
since …") are data rendered in the user's zone with UTC on hover, not text in UTC; CSV keeps
the instant as ISO UTC with its offset."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import httpx2
import psycopg
import pypdf

from storage import insert_host

from .conftest import WebRig
from .test_zone_pages import KOLKATA, TIME_TAG, assert_zoned, use_zone

POLLED = dt.datetime(2026, 1, 5, 6, 40, tzinfo=dt.UTC)  # 12:10 in Kolkata


async def stale_host(web_rig: WebRig) -> int:
    host_id = await web_rig.db.run(
        lambda c: insert_host(c, name="127.90.2.5", address="127.90.2.5", display_name="db-s").id
    )

    def polled_long_ago(conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE hosts SET last_patch_poll_at = %s WHERE id = %s", (POLLED, host_id))

    await web_rig.db.run(polled_long_ago)
    return host_id


def stale_tag(page: str) -> tuple[str, str, str]:
    tags: list[tuple[str, str, str]] = [
        t for t in TIME_TAG.findall(page) if t[1] == "2026-01-05 06:40:00"
    ]
    assert tags, page
    return tags[0]


async def test_stale_compliance_reason_shows_its_time_in_the_users_zone_on_reports_and_host(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    host_id = await stale_host(web_rig)
    await use_zone(client, "Asia/Kolkata")
    for path in ("/reports?kind=compliance", f"/hosts/{host_id}"):
        page = (await client.get(path)).text
        assert "patch data stale since" in page, path
        _, _, text = stale_tag(page)
        assert text.endswith(POLLED.astimezone(KOLKATA).strftime("%H:%M")), (path, text)
        assert_zoned(page)


async def test_stale_compliance_reason_in_the_csv_and_api_carries_the_instant_as_iso_utc(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await stale_host(web_rig)
    await use_zone(client, "Asia/Kolkata")
    csv = (await client.get("/api/v1/reports/compliance?format=csv")).text
    assert "patch data stale since 2026-01-05T06:40:00+00:00" in csv, csv
    api = (await client.get("/api/v1/reports/compliance")).json()
    (host,) = [h for h in api["hosts"] if h["name"] == "127.90.2.5"]
    assert host["reason"] == "patch data stale"
    assert dt.datetime.fromisoformat(host["stale_since"]) == POLLED


async def test_the_compliance_pdf_download_is_in_the_users_zone_and_names_it(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await stale_host(web_rig)
    await use_zone(client, "Asia/Kolkata")
    response = await client.get("/api/v1/reports/compliance?format=pdf")
    assert response.status_code == 200, response.text
    pages = pypdf.PdfReader(io.BytesIO(response.content)).pages
    text = "\n".join(p.extract_text() for p in pages)
    assert "Last poll (Asia/Kolkata)" in text
    assert "patch data stale since 2026-01-05 12:10" in text
