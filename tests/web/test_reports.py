"""Reports, waivers and the evidence pack through the API and the pages, on a real database:
one compliance answer per host in JSON, CSV and PDF; scoped users see only their groups."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import zipfile
from typing import Any

import httpx2
import pypdf

from storage import create_user
from storage.principals import set_user_groups
from web.authz import Role

from .conftest import WebRig, assert_envelope, login

PASSWORD = "reports-test-password-1"
NOW = dt.datetime.now(dt.UTC)


def seed(conn: Any) -> dict[str, int]:
    """Groups red and blue; paused hosts (their actors stay parked, nothing is polled):
    r-bad (critical 10 days old), r-ok (nothing pending, needs a reboot), b-new (never polled),
    b-waived (critical 10 days old, to be waived)."""
    ids: dict[str, int] = {}
    for group in ("red", "blue"):
        ids[group] = conn.execute(
            "INSERT INTO groups (name) VALUES (%s) RETURNING id", (group,)
        ).fetchone()[0]
    fresh = NOW - dt.timedelta(minutes=10)
    hosts = [("r-bad", "red", fresh, False), ("r-ok", "red", fresh, True),
             ("b-new", "blue", None, False), ("b-waived", "blue", fresh, False)]  # fmt: skip
    for name, group, polled, reboot in hosts:
        host_id = conn.execute(
            "INSERT INTO hosts (name, paused, last_patch_poll_at, pending_reboot)"
            " VALUES (%s, true, %s, %s) RETURNING id",
            (name, polled, reboot),
        ).fetchone()[0]
        ids[name] = host_id
        conn.execute("INSERT INTO host_groups VALUES (%s, %s)", (host_id, ids[group]))
    for name in ("r-bad", "b-waived"):
        conn.execute(
            "INSERT INTO host_patches (host_id, name, severity, cve_ids, first_seen_at)"
            " VALUES (%s, 'openssl', 'critical', '{CVE-2026-0001}', %s)",
            (ids[name], NOW - dt.timedelta(days=10)),
        )
    return ids


async def waive(client: httpx2.AsyncClient, host_id: int) -> int:
    response = await client.post(
        "/api/v1/waivers",
        json={"host_id": host_id, "package": "openssl", "owner": "sec team",
              "reason": "vendor fix pending",
              "expires_at": (NOW + dt.timedelta(days=5)).isoformat()},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def user_client(rig: WebRig, role: Role, group_ids: list[int]) -> httpx2.AsyncClient:
    name = f"{role.value}-reports"
    user = await rig.db.run(create_user, name, await rig.auth.hash_password(PASSWORD), role.value)
    await rig.db.run(set_user_groups, user.id, group_ids)
    client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=rig.app),
                                base_url="http://testserver")  # fmt: skip
    client.headers["x-csrf-token"] = await login(client, PASSWORD, name)
    return client


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {h["name"]: h["status"] for h in report["hosts"]}


async def test_compliance_report_judges_every_host_and_counts_waived_ones_separately(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    await waive(client, ids["b-waived"])
    report = (await client.get("/api/v1/reports/compliance")).json()
    assert statuses(report) == {"r-bad": "noncompliant", "r-ok": "compliant",
                                "b-new": "unknown", "b-waived": "compliant"}  # fmt: skip
    summary = report["summary"]
    assert (summary["compliant"], summary["noncompliant"], summary["unknown"]) == (2, 1, 1)
    assert summary["waived_hosts"] == 1
    assert summary["percent"] == 66.7  # of the three hosts with known state
    assert summary["percent_of_all"] == 50.0  # unknown hosts count against it
    waived = next(h for h in report["hosts"] if h["name"] == "b-waived")
    assert waived["label"] == "compliant with 1 waived patch"
    assert [w["host"] for w in report["waivers"]] == ["b-waived"]
    assert report["as_of"]
    red = (await client.get("/api/v1/reports/compliance?group=red")).json()
    assert set(statuses(red)) == {"r-bad", "r-ok"} and red["waivers"] == []


async def test_csv_and_pdf_give_each_host_the_same_status_as_json(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    await waive(client, ids["b-waived"])
    expected = statuses((await client.get("/api/v1/reports/compliance")).json())
    response = await client.get("/api/v1/reports/compliance?format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["host"]: r["status"] for r in rows} == expected
    response = await client.get("/api/v1/reports/compliance?format=pdf")
    assert response.headers["content-type"] == "application/pdf"
    pdf = pypdf.PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert "Compliance report" in pdf.pages[0].extract_text()
    for title in ("Patch status distribution", "Compliance trend", "Hosts", "Risk waivers"):
        assert title in text
    for name, status in expected.items():
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert status in line.split(), (name, line)


def one_job_per_host(conn: Any, ids: dict[str, int]) -> None:
    job = conn.execute(
        "INSERT INTO jobs (kind, schedule, created_by) VALUES ('patch', 'now', 'admin')"
        " RETURNING id"
    ).fetchone()[0]
    for name in ("r-bad", "r-ok", "b-new", "b-waived"):
        conn.execute(
            "INSERT INTO job_hosts (job_id, host_id, state, error_message)"
            " VALUES (%s, %s, 'failed', 'boom')",
            (job, ids[name]),
        )


async def test_operator_reports_never_contain_another_groups_host(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    await web_rig.db.run(one_job_per_host, ids)
    await waive(client, ids["b-waived"])
    blue_definition = await client.post(
        "/api/v1/report-definitions",
        json={"name": "blue", "report": "compliance", "filters": {"group": "blue"},
              "recipients": ["blue@example.org"], "schedule": "0 6 * * 1"},
    )  # fmt: skip
    assert blue_definition.status_code == 201
    blue_hosts = ("b-new", "b-waived")
    operator = await user_client(web_rig, Role.OPERATOR, [ids["red"]])
    try:
        report = (await operator.get("/api/v1/reports/compliance")).json()
        assert set(statuses(report)) == {"r-bad", "r-ok"} and report["waivers"] == []
        history = (await operator.get("/api/v1/reports/patch-history")).json()
        assert {r["host"] for r in history["rows"]} == {"r-bad", "r-ok"}
        pdf = pypdf.PdfReader(io.BytesIO((await operator.get(
            "/api/v1/reports/compliance?format=pdf")).content))  # fmt: skip
        text = "\n".join(page.extract_text() for page in pdf.pages)
        assert "r-bad" in text and not any(name in text for name in blue_hosts)
        pack = zipfile.ZipFile(io.BytesIO((await operator.get("/api/v1/reports/evidence")).content))
        for name in pack.namelist():
            if not name.endswith(".pdf"):
                content = pack.read(name).decode()
                assert not any(host in content for host in blue_hosts), name
        assert (await operator.get("/api/v1/waivers")).json()["waivers"] == []
        assert (await operator.get("/api/v1/report-definitions")).json()["definitions"] == []
        exposure = (await operator.get("/api/v1/reports/exposure")).json()
        assert {i["host"] for i in exposure["items"]} == {"r-bad"}
        reboots = (await operator.get("/api/v1/reports/reboots")).json()
        assert [i["host"] for i in reboots["items"]] == ["r-ok"]
        text = (await operator.get("/api/v1/reports/compliance?format=csv")).text
        assert "b-new" not in text and "b-waived" not in text
        # asking for the other group's host by id or group finds nothing
        other = await operator.get(f"/api/v1/reports/compliance?host_id={ids['b-new']}")
        assert other.json()["hosts"] == []
        blue = await operator.get("/api/v1/reports/exposure?group=blue")
        assert blue.json()["items"] == []
        refused = await operator.post(
            "/api/v1/waivers",
            json={"host_id": ids["b-waived"], "owner": "o", "reason": "r",
                  "expires_at": (NOW + dt.timedelta(days=1)).isoformat()},
        )  # fmt: skip
        assert_envelope(refused, 404, "not_found")
    finally:
        await operator.aclose()


async def test_auditor_reads_reports_but_may_not_record_waivers(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    auditor = await user_client(web_rig, Role.AUDITOR, [ids["red"], ids["blue"]])
    try:
        assert (await auditor.get("/api/v1/reports/patch-history")).status_code == 200
        refused = await auditor.post(
            "/api/v1/waivers",
            json={"host_id": ids["r-bad"], "owner": "o", "reason": "r",
                  "expires_at": (NOW + dt.timedelta(days=1)).isoformat()},
        )  # fmt: skip
        assert refused.status_code == 403
    finally:
        await auditor.aclose()


async def test_waiver_in_the_past_or_without_owner_is_a_422_naming_the_fields(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    response = await client.post(
        "/api/v1/waivers",
        json={"host_id": ids["r-bad"], "owner": " ", "reason": "r",
              "expires_at": "2020-01-01T00:00:00Z"},
    )  # fmt: skip
    assert set(assert_envelope(response, 422)["details"]["fields"]) == {"owner"}
    response = await client.post(
        "/api/v1/waivers",
        json={"host_id": ids["r-bad"], "owner": "o", "reason": "r",
              "expires_at": "2020-01-01T00:00:00Z"},
    )  # fmt: skip
    assert assert_envelope(response, 422)["details"]["fields"] == {
        "expires_at": "must be in the future"
    }


async def test_revoked_waiver_no_longer_counts_but_stays_listed(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    waiver_id = await waive(client, ids["b-waived"])
    assert (await client.post(f"/api/v1/waivers/{waiver_id}/revoke")).status_code == 204
    assert (await client.post(f"/api/v1/waivers/{waiver_id}/revoke")).status_code == 404
    report = (await client.get("/api/v1/reports/compliance")).json()
    assert statuses(report)["b-waived"] == "noncompliant"
    assert [w["revoked_by"] for w in report["waivers"]] == ["admin"]


async def test_report_filters_refuse_an_inverted_range_and_unknown_format(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    bad = await client.get("/api/v1/reports/patch-history?since=2026-02-01&until=2026-01-01")
    assert assert_envelope(bad, 422)["details"]["fields"] == {"until": "must not be before since"}
    bad = await client.get("/api/v1/reports/exposure?format=xls")
    assert set(assert_envelope(bad, 422)["details"]["fields"]) == {"format"}


async def test_evidence_pack_manifest_lists_every_file_with_its_sha256(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    await waive(client, ids["b-waived"])
    response = await client.get("/api/v1/reports/evidence")
    assert response.headers["content-type"] == "application/zip"
    pack = zipfile.ZipFile(io.BytesIO(response.content))
    manifest = json.loads(pack.read("manifest.json"))
    listed = {f["name"]: f["sha256"] for f in manifest["files"]}
    assert set(listed) == set(pack.namelist()) - {"manifest.json"}
    for name, digest in listed.items():
        assert hashlib.sha256(pack.read(name)).hexdigest() == digest
    unknown = pack.read("unknown-hosts.csv").decode()
    assert "b-new" in unknown and "r-bad" not in unknown
    assert "sec team" in pack.read("waivers.csv").decode()


async def test_reports_page_shows_summary_charts_and_download_links(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await web_rig.db.run(seed)
    page = await client.get("/reports?kind=compliance")
    assert page.status_code == 200
    assert 'data-figure="percent-of-all">25.0%' in page.text  # 1 of 4 hosts
    assert 'data-figure="percent">33.3%' in page.text  # 1 of 3 hosts with known state
    assert "of hosts with known state" in page.text
    assert '<svg class="chart"' in page.text and "style=" not in page.text
    assert "/api/v1/reports/compliance?format=pdf" in page.text
    for kind in ("patch-history", "exposure", "reboots"):
        assert (await client.get(f"/reports?kind={kind}")).status_code == 200
    bad = await client.get("/reports?since=2026-02-01&until=2026-01-01")
    assert bad.status_code == 422 and "must not be before since" in bad.text


async def test_dashboard_compliance_figure_matches_the_compliance_report(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    await client.post(
        "/api/v1/waivers",
        json={"host_id": ids["b-waived"], "package": "openssl", "owner": "sec team",
              "reason": "r", "expires_at": (NOW + dt.timedelta(days=3)).isoformat()},
    )  # fmt: skip
    report = (await client.get("/api/v1/reports/compliance")).json()
    dashboard = (await client.get("/")).text
    summary = report["summary"]
    assert f'data-figure="compliance-percent">{summary["percent_of_all"]}%' in dashboard
    assert f'data-figure="compliance-percent-known">{summary["percent"]}%' in dashboard
    assert 'data-figure="sla-breaches">1<' in dashboard  # r-bad's critical patch
    assert 'data-figure="expiring-waivers">1<' in dashboard
    assert "data-as-of=" in dashboard and "style=" not in dashboard


async def test_report_definition_is_stored_downloaded_with_its_format_and_deleted(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await web_rig.db.run(seed)
    created = await client.post(
        "/api/v1/report-definitions",
        json={"name": "weekly reboots", "report": "reboots", "format": "csv",
              "filters": {"group": "red"}, "recipients": ["ops@example.org"],
              "schedule": "0 6 * * 1"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    definition_id = created.json()["id"]
    listed = (await client.get("/api/v1/report-definitions")).json()["definitions"]
    assert [(d["name"], d["schedule"], d["recipients"]) for d in listed] == [
        ("weekly reboots", "0 6 * * 1", ["ops@example.org"])
    ]
    download = await client.get(f"/api/v1/report-definitions/{definition_id}/download")
    assert download.headers["content-type"].startswith("text/csv")
    assert [r["host"] for r in csv.DictReader(io.StringIO(download.text))] == ["r-ok"]
    assert (await client.delete(f"/api/v1/report-definitions/{definition_id}")).status_code == 204
    missing = await client.get(f"/api/v1/report-definitions/{definition_id}/download")
    assert_envelope(missing, 404, "not_found")


async def test_report_definition_with_a_bad_schedule_or_recipient_is_a_422(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    response = await client.post(
        "/api/v1/report-definitions",
        json={"name": "x", "report": "exposure", "schedule": "0 25 * * *",
              "recipients": ["not-an-address"]},
    )  # fmt: skip
    fields = assert_envelope(response, 422)["details"]["fields"]
    assert fields["schedule"] == "hour: between 0 and 23"
    assert set(fields) == {"schedule", "recipients"}


async def test_host_page_shows_the_reports_verdict_and_never_nothing_pending_without_data(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    report = statuses((await client.get("/api/v1/reports/compliance")).json())
    for name in ("r-bad", "r-ok", "b-new"):
        page = (await client.get(f"/hosts/{ids[name]}")).text
        assert f'class="badge compliance-{report[name]}" data-host-status' in page
    never = (await client.get(f"/hosts/{ids['b-new']}")).text
    assert "Nothing pending" not in never and "No current patch data" in never


HOSTILE = ["\x00", "99999999999999999999", "-1", "2026-13-45", "%", "' OR 1=1 --", "x" * 5000,
           "9999-12-31", "0001-01-01"]  # fmt: skip


async def test_hostile_report_and_waiver_inputs_are_4xx_never_500(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    csrf = client.headers["x-csrf-token"]
    for value in HOSTILE:
        for name in ("since", "until", "group", "host_id", "severity", "format", "kind"):
            for path in ("/reports", "/api/v1/reports/compliance", "/api/v1/reports/evidence",
                         "/api/v1/reports/patch-history", "/api/v1/reports/exposure"):  # fmt: skip
                for fmt in ("json", "csv"):
                    response = await client.get(path, params={name: value, "format": fmt})
                    assert response.status_code < 500, (path, name, value[:20], fmt)
        for name in ("host_id", "package", "cve", "owner", "reason", "expires_at"):
            form = {"host_id": "1", "owner": "o", "reason": "r", "expires_at": "2030-01-01T00:00",
                    name: value, "csrf_token": csrf}  # fmt: skip
            response = await client.post("/waivers", data=form)
            assert 400 <= response.status_code < 500, (name, value[:20], response.status_code)
            api = await client.post("/api/v1/waivers", json={k: v for k, v in form.items()
                                                              if k != "csrf_token"})  # fmt: skip
            assert 400 <= api.status_code < 500, (name, value[:20], api.status_code)
    revoke = await client.post("/waivers/99999999999999999999/revoke", data={"csrf_token": csrf})
    assert 400 <= revoke.status_code < 500


async def test_a_day_past_the_calendar_or_a_range_over_the_maximum_is_a_422_everywhere(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    late = "until=9999-12-31"
    for path in ("/api/v1/reports/patch-history", "/api/v1/reports/compliance"):
        fields = assert_envelope(await client.get(f"{path}?{late}"), 422)["details"]["fields"]
        assert set(fields) == {"until"}
    widest = "/api/v1/reports/evidence?since=0001-01-01&until=9999-12-31"
    assert set(assert_envelope(await client.get(widest), 422)["details"]["fields"]) == {
        "since", "until"
    }  # fmt: skip
    too_long = await client.get("/api/v1/reports/patch-history?since=2000-01-01&until=2026-01-01")
    assert "at most 3660 days" in assert_envelope(too_long, 422)["details"]["fields"]["until"]
    page = await client.get(f"/reports?kind=patch-history&{late}")
    assert page.status_code == 422 and "a day from" in page.text


async def test_a_csv_with_a_day_past_the_calendar_is_a_422_not_a_truncated_200(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for kind in ("patch-history", "compliance"):
        response = await client.get(f"/api/v1/reports/{kind}?format=csv&until=9999-12-31")
        assert_envelope(response, 422)


async def test_report_definition_with_inverted_or_overflowing_dates_is_a_422_at_creation(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for filters, message in (
        ({"since": "2026-02-01", "until": "2026-01-01"}, "must not be before since"),
        ({"until": "9999-12-31"}, "a day from 1970-01-01 to 9999-12-30"),
    ):
        response = await client.post(
            "/api/v1/report-definitions",
            json={"name": "x", "report": "patch-history", "filters": filters,
                  "schedule": "0 6 * * 1"},
        )  # fmt: skip
        assert assert_envelope(response, 422)["details"]["fields"] == {"filters.until": message}
    assert (await client.get("/api/v1/report-definitions")).json()["definitions"] == []


async def test_reports_page_with_an_unknown_kind_is_a_422(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    page = await client.get("/reports?kind=bogus")
    assert page.status_code == 422 and 'aria-label="Compliance summary"' not in page.text
    assert "one of: compliance, patch-history, exposure, reboots" in page.text


async def test_schedules_that_never_fire_or_have_a_reversed_range_or_zero_step_are_a_422(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for schedule, message in (
        ("0 6 31 2 *", "day of month: never in the given months"),
        ("5-1 6 * * *", "minute: a range must not be reversed"),
        ("5/0 6 * * *", "minute: a step of at least 1"),
        ("0 6 30 2 *", "day of month: never in the given months"),
    ):
        response = await client.post(
            "/api/v1/report-definitions",
            json={"name": "x", "report": "exposure", "schedule": schedule},
        )
        assert assert_envelope(response, 422)["details"]["fields"] == {"schedule": message}
    for fine in ("0 6 29 2 *", "0 6 31 2 1", "*/15 0-23/2 1,15 * 1-5", "0 6 31 1-2 *"):
        response = await client.post(
            "/api/v1/report-definitions",
            json={"name": "x", "report": "exposure", "schedule": fine},
        )
        assert response.status_code == 201, (fine, response.text)


async def test_report_definitions_are_seen_and_deleted_only_by_their_owner_or_an_admin(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    body = {"name": "blue weekly", "report": "exposure", "filters": {"group": "blue"},
            "recipients": ["blue-team@example.org"], "schedule": "0 6 * * 1"}  # fmt: skip
    admins = (await client.post("/api/v1/report-definitions", json=body)).json()["id"]
    operator = await user_client(web_rig, Role.OPERATOR, [ids["red"]])
    try:
        assert (await operator.get("/api/v1/report-definitions")).json()["definitions"] == []
        for response in (
            await operator.get(f"/api/v1/report-definitions/{admins}/download"),
            await operator.delete(f"/api/v1/report-definitions/{admins}"),
        ):
            assert_envelope(response, 404, "not_found")
        own = await operator.post("/api/v1/report-definitions", json={**body, "name": "mine"})
        listed = (await operator.get("/api/v1/report-definitions")).json()["definitions"]
        assert [d["name"] for d in listed] == ["mine"]
        every = (await client.get("/api/v1/report-definitions")).json()["definitions"]
        assert [d["name"] for d in every] == ["blue weekly", "mine"]
        deleted = await client.delete(f"/api/v1/report-definitions/{own.json()['id']}")
        assert deleted.status_code == 204  # an admin may delete anyone's
    finally:
        await operator.aclose()


async def test_severity_on_the_reboots_report_is_a_422_and_the_page_hides_it(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    for fmt in ("json", "csv", "pdf"):
        response = await client.get(f"/api/v1/reports/reboots?severity=high&format={fmt}")
        assert set(assert_envelope(response, 422)["details"]["fields"]) == {"severity"}
    page = await client.get("/reports?kind=reboots&severity=high")
    assert page.status_code == 200 and 'name="severity"' not in page.text
    assert 'name="severity"' in (await client.get("/reports?kind=exposure")).text


async def test_evidence_pack_csvs_defuse_spreadsheet_formulas_like_the_report_csvs(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    formula = '=HYPERLINK("http://x")'
    response = await client.post(
        "/api/v1/waivers",
        json={"host_id": ids["b-waived"], "owner": formula, "reason": "+1 reason",
              "expires_at": (NOW + dt.timedelta(days=5)).isoformat()},
    )  # fmt: skip
    assert response.status_code == 201
    pack = zipfile.ZipFile(io.BytesIO((await client.get("/api/v1/reports/evidence")).content))
    [row] = list(csv.DictReader(io.StringIO(pack.read("waivers.csv").decode())))
    assert row["owner"] == "'" + formula and row["reason"] == "'+1 reason"


async def test_waiver_with_a_malformed_cve_is_a_422_and_one_for_nothing_pending_warns(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    base = {"host_id": ids["r-bad"], "owner": "o", "reason": "r",
            "expires_at": (NOW + dt.timedelta(days=5)).isoformat()}  # fmt: skip
    for bad in ("not-a-cve", "CVE-26-1", "CVE-2026-12"):
        response = await client.post("/api/v1/waivers", json={**base, "cve": bad})
        assert set(assert_envelope(response, 422)["details"]["fields"]) == {"cve"}, bad
    fine = await client.post("/api/v1/waivers", json={**base, "cve": "cve-2026-0001"})
    assert fine.status_code == 201 and fine.json()["warnings"] == []
    [listed] = (await client.get("/api/v1/waivers")).json()["waivers"]
    assert listed["cve"] == "CVE-2026-0001"
    stray = await client.post(
        "/api/v1/waivers", json={**base, "package": "nosuchpkg", "cve": "CVE-2026-99999"}
    )
    assert stray.status_code == 201
    assert stray.json()["warnings"] == [
        "no pending patch of nosuchpkg naming CVE-2026-99999 on this host now: the waiver"
        " applies only if one appears"
    ]
    page = await client.post(
        "/waivers",
        data={**base, "package": "nosuchpkg", "csrf_token": client.headers["x-csrf-token"]},
        follow_redirects=True,
    )
    assert "no pending patch of nosuchpkg" in page.text


async def test_report_outputs_state_who_generated_them_for_which_scope_and_filters(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    report = (await client.get("/api/v1/reports/exposure?group=red&severity=high")).json()
    assert report["about"] == {"generated_by": "admin (admin)", "scope": "all hosts",
                               "filters": {"group": "red", "severity": "high"}}  # fmt: skip
    operator = await user_client(web_rig, Role.OPERATOR, [ids["red"]])
    try:
        history = (await operator.get("/api/v1/reports/patch-history?since=2026-01-01")).json()
        assert history["about"] == {"generated_by": "operator-reports (operator)",
                                    "scope": "groups: red",
                                    "filters": {"since": "2026-01-01"}}  # fmt: skip
        pdf = await operator.get("/api/v1/reports/reboots?format=pdf&group=red")
        cover = pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
        for line in ("Generated by operator-reports (operator)", "Scope: groups: red",
                     "Filters: group=red"):  # fmt: skip
            assert line in cover, cover
        pack = zipfile.ZipFile(io.BytesIO((await operator.get("/api/v1/reports/evidence")).content))
        summary = json.loads(pack.read("compliance-summary.json"))
        assert summary["about"]["generated_by"] == "operator-reports (operator)"
        assert summary["about"]["scope"] == "groups: red"
    finally:
        await operator.aclose()


async def test_exposure_counts_waived_patches_separately_from_the_open_ones(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await web_rig.db.run(seed)
    await waive(client, ids["b-waived"])
    report = (await client.get("/api/v1/reports/exposure")).json()
    assert sum(report["by_severity_age"]["critical"].values()) == 1  # r-bad's, not waived
    assert report["waived"] == 1 and len(report["items"]) == 2
    page = await client.get("/reports?kind=exposure")
    assert 'data-figure="exposure-waived">1<' in page.text
