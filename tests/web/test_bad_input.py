"""Every bad input is a clear 4xx in the one envelope: the server errors found by schemathesis
and by hand (issue 9), each a regression test, plus literal host filters."""

from __future__ import annotations

import datetime as dt
import re

import httpx2
import pytest

from storage import insert_host

from .conftest import WebRig, assert_envelope, form_token

pytestmark = pytest.mark.timeout(60)

BEYOND_BIGINT = 2**63
HUGE = 99999999999999999999


async def add_hosts(web_rig: WebRig, names: dict[str, str]) -> dict[str, int]:
    """Hosts straight into the database (display name → id), on loopback addresses no agent
    listens on: the actors only ever see connections refused."""
    ids = {}
    for n, (display, name) in enumerate(names.items()):
        row = await web_rig.db.run(
            lambda conn, n=n, display=display, name=name: insert_host(
                conn, name=name, address=f"127.108.250.{n + 1}", display_name=display
            )
        )
        ids[display] = row.id
    return ids


async def test_job_for_a_host_id_that_does_not_exist_is_422_naming_host_ids(
    client: httpx2.AsyncClient,
) -> None:
    error = assert_envelope(
        await client.post("/api/v1/jobs", json={"host_ids": [424242], "schedule": "window"}),
        422,
        "validation_error",
    )
    assert "host_ids" in error["details"]["fields"]
    assert "424242" in error["details"]["fields"]["host_ids"]


async def test_body_ids_beyond_bigint_are_422(client: httpx2.AsyncClient) -> None:
    for body in ({"host_ids": [HUGE]}, {"host_ids": [BEYOND_BIGINT]}, {"host_ids": [0]}):
        error = assert_envelope(await client.post("/api/v1/jobs", json=body), 422)
        assert "host_ids" in error["details"]["fields"]
    error = assert_envelope(
        await client.post("/api/v1/hosts/refresh", json={"host_ids": [HUGE]}), 422
    )
    assert "host_ids" in error["details"]["fields"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/windows/{id}"),
        ("PUT", "/api/v1/windows/{id}"),
        ("DELETE", "/api/v1/blackouts/{id}"),
        ("GET", "/api/v1/hosts/{id}"),
        ("DELETE", "/api/v1/hosts/{id}"),
        ("GET", "/api/v1/jobs/{id}"),
        ("POST", "/api/v1/jobs/{id}/cancel"),
        ("POST", "/api/v1/jobs/{id}/retry"),
        ("PATCH", "/api/v1/groups/{id}"),
        ("DELETE", "/api/v1/groups/{id}"),
        ("GET", "/api/v1/discovery/{id}"),
    ],
)
@pytest.mark.parametrize("huge", [HUGE, BEYOND_BIGINT, "9" * 4400, "1" * 5000])
async def test_path_ids_beyond_bigint_are_422_naming_the_range(
    client: httpx2.AsyncClient, method: str, path: str, huge: object
) -> None:
    response = await client.request(
        method, path.format(id=huge), json={"name": "x"} if method in ("PUT", "PATCH") else None
    )
    error = assert_envelope(response, 422, "validation_error")
    assert "9223372036854775807" in error["message"]


async def test_pages_with_ids_beyond_bigint_are_422_pages_not_500(
    client: httpx2.AsyncClient,
) -> None:
    for path in (f"/hosts/{HUGE}", f"/jobs/{'9' * 5000}", f"/discovery/{BEYOND_BIGINT}"):
        response = await client.get(path)
        assert response.status_code == 422, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "9223372036854775807" in response.text, path
    form = {"csrf_token": "x"}
    response = await client.post(f"/hosts/{'7' * 4400}/refresh", data=form)
    assert response.status_code in (403, 422), response.text  # CSRF or range: never a 500


async def test_deeply_nested_json_is_400(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/groups", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    error = assert_envelope(response, 400, "bad_request")
    assert "nest" in error["message"]
    shallow_but_deep = b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}"
    response = await client.post(
        "/api/v1/groups", content=shallow_but_deep, headers={"content-type": "application/json"}
    )
    assert_envelope(response, 400, "bad_request")


async def test_calendar_days_not_a_number_is_422_naming_days(client: httpx2.AsyncClient) -> None:
    error = assert_envelope(await client.get("/api/v1/calendar?days=abc"), 422)
    assert set(error["details"]["fields"]) == {"days"}
    error = assert_envelope(await client.get("/api/v1/calendar?days=1000"), 422)
    assert set(error["details"]["fields"]) == {"days"}
    assert (await client.get("/api/v1/calendar?days=7")).status_code == 200


async def test_windows_list_answers_while_a_window_has_an_until_date(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await add_hosts(web_rig, {"db1": "db1.example.test"})
    until = (dt.date.today() + dt.timedelta(days=60)).isoformat()
    created = await client.post(
        "/api/v1/windows",
        json={
            "host_id": ids["db1"],
            "recurrence": "weekly",
            "weekdays": [5],
            "start_date": dt.date.today().isoformat(),
            "start_time": "02:00",
            "duration_minutes": 60,
            "timezone": "UTC",
            "until": until,
        },
    )
    assert created.status_code == 201, created.text
    listing = await client.get("/api/v1/windows")
    assert listing.status_code == 200, listing.text
    (window,) = listing.json()["windows"]
    assert window["until"] == until
    assert window["start_time"].startswith("02:00")


async def test_job_with_a_space_in_a_package_name_is_422_naming_packages(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await add_hosts(web_rig, {"db1": "db1.example.test"})
    for packages in (["openssl libssl3"], ["-rf"], ["ok", ""], ["a" * 257]):
        error = assert_envelope(
            await client.post(
                "/api/v1/jobs",
                json={"kind": "install", "host_ids": [ids["db1"]], "packages": packages},
            ),
            422,
        )
        assert "packages" in error["details"]["fields"], packages
    error = assert_envelope(
        await client.post(
            "/api/v1/jobs",
            json={
                "kind": "install",
                "host_ids": [ids["db1"]],
                "packages": [{"name": "openssl", "version": "3.0 beta"}],
            },
        ),
        422,
    )
    assert "packages" in error["details"]["fields"]


async def test_filter_underscore_selects_only_hosts_whose_name_contains_it(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await add_hosts(
        web_rig,
        {"db_1": "db1.example.test", "web1": "web1.example.test", "web2": "web2.example.test"},
    )
    listing = (await client.get("/api/v1/hosts", params={"q": "_"})).json()
    assert [h["display_name"] for h in listing["hosts"]] == ["db_1"]
    assert (await client.get("/api/v1/hosts", params={"q": "%"})).json()["total"] == 0
    preview = await client.post("/api/v1/deploy/preview", json={"filter": "_"})
    assert preview.status_code == 200, preview.text
    assert preview.json()["hosts"] == 1


async def test_job_matching_every_host_needs_all_hosts_true(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await add_hosts(web_rig, {"web1": "web1.example.test", "web2": "web2.example.test"})
    body = {"kind": "reboot", "schedule": "window", "filter": "web"}
    error = assert_envelope(await client.post("/api/v1/jobs", json=body), 422)
    assert "all_hosts" in error["details"]["fields"]
    assert "2" in error["details"]["fields"]["all_hosts"]
    created = await client.post("/api/v1/jobs", json={**body, "all_hosts": True})
    assert created.status_code == 201, created.text
    assert created.json()["hosts"] == 2


async def test_deploy_page_confirmation_shows_the_resolved_host_count(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await add_hosts(
        web_rig,
        {"db_1": "db1.example.test", "web1": "web1.example.test", "web2": "web2.example.test"},
    )
    page = await client.get("/deploy", params={"filter": "_"})
    assert page.status_code == 200
    assert 'id="host-count">1</strong> host(s) selected' in page.text
    token = form_token(page.text)
    refused = await client.post(
        "/deploy", data={"filter": "example", "kind": "patch", "csrf_token": token}
    )
    assert refused.status_code == 422
    assert "matches all 3 hosts" in refused.text


async def test_page_form_shows_the_same_package_message_as_the_api(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    ids = await add_hosts(web_rig, {"db1": "db1.example.test"})
    api = assert_envelope(
        await client.post(
            "/api/v1/jobs",
            json={"kind": "install", "host_ids": [ids["db1"]], "packages": ["openssl libssl3"]},
        ),
        422,
    )
    message = api["details"]["fields"]["packages"]
    token = form_token((await client.get("/deploy")).text)
    page = await client.post(
        "/deploy",
        data={
            "kind": "install",
            "host_ids": str(ids["db1"]),
            "packages": "openssl libssl3",
            "csrf_token": token,
        },
    )
    assert page.status_code == 422
    assert message in page.text.replace("&#39;", "'")


async def test_window_for_a_host_or_group_that_does_not_exist_is_422_naming_it(
    client: httpx2.AsyncClient,
) -> None:
    window = {"recurrence": "daily", "start_time": "02:00", "duration_minutes": 60}
    error = assert_envelope(
        await client.post("/api/v1/windows", json={**window, "group_id": 52508}), 422
    )
    assert set(error["details"]["fields"]) == {"group_id"}
    error = assert_envelope(
        await client.post("/api/v1/windows", json={**window, "host_id": 52508}), 422
    )
    assert set(error["details"]["fields"]) == {"host_id"}
    error = assert_envelope(
        await client.put("/api/v1/windows/9", json={**window, "group_id": 52508}), 422
    )
    assert set(error["details"]["fields"]) == {"group_id"}


async def test_nul_characters_in_text_are_422_not_500(client: httpx2.AsyncClient) -> None:
    error = assert_envelope(await client.get("/api/v1/hosts", params={"q": "a\x00b"}), 422)
    assert set(error["details"]["fields"]) == {"q"}
    error = assert_envelope(
        await client.post("/api/v1/jobs", json={"group": "web\x00", "schedule": "now"}), 422
    )
    assert "group" in error["details"]["fields"]
    unpaired_surrogate = await client.post(
        "/api/v1/jobs",
        content=b'{"group": "\\uda9a", "schedule": "now"}',
        headers={"content-type": "application/json"},
    )
    assert_envelope(unpaired_surrogate, 400, "bad_request")
    assert (await client.get("/hosts", params={"q": "a\x00b"})).status_code == 422


def shown_errors(html: str) -> dict[str, str]:
    """Error messages on a page: ``id="err-<field>"`` beside a field, and the summary list's
    ``<li data-field="<field>">`` for fields without an input."""
    found = dict(re.findall(r'<p class="error" id="err-([a-z_]+)">([^<]+)</p>', html))
    found |= dict(re.findall(r'<li data-field="([a-z_]+)">[^<]*?: ([^<]+)</li>', html))
    return found


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target", "host:424242"),
        ("target", f"host:{2**64}"),
        ("day_of_month", "40"),
        ("nth", "9"),
        ("start_time", "25:00"),
        ("name", "n" * 101),
        ("auto_apply", "bogus"),
    ],
)
async def test_window_form_errors_are_shown_beside_their_field(
    web_rig: WebRig, client: httpx2.AsyncClient, field: str, value: str
) -> None:
    host = await web_rig.db.run(
        lambda conn: insert_host(conn, name="form.example.test", address="127.108.251.20")
    )
    token = form_token((await client.get("/windows")).text)
    data = {"csrf_token": token, "name": "w", "target": f"host:{host.id}",
            "recurrence": "monthly_day", "start_date": "2030-01-01", "start_time": "02:00",
            "duration_minutes": "60", "timezone": "UTC", "day_of_month": "1", "nth": "1",
            "auto_apply": "none"} | {field: value}  # fmt: skip
    response = await client.post("/windows", data=data)
    assert response.status_code == 422, response.text[-2000:]
    errors = shown_errors(response.text)
    where = {"target": ("target", "host_id", "group_id")}.get(field, (field,))
    assert any(errors.get(name) for name in where), (field, errors)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_percent", "500"),
        ("reboot_delay_s", "-1"),
        ("failure_threshold", "x"),
        ("kind", "bogus"),
        ("schedule", "later"),
    ],
)
async def test_deploy_form_errors_are_shown_beside_their_field(
    web_rig: WebRig, client: httpx2.AsyncClient, field: str, value: str
) -> None:
    host = await web_rig.db.run(
        lambda conn: insert_host(conn, name="deploy.example.test", address="127.108.251.21")
    )
    token = form_token((await client.get("/deploy")).text)
    data = {"csrf_token": token, "host_ids": str(host.id), "kind": "patch",
            "schedule": "window", "selection": "all"} | {field: value}  # fmt: skip
    response = await client.post("/deploy", data=data)
    assert response.status_code == 422, response.text[-2000:]
    assert shown_errors(response.text).get(field), (field, shown_errors(response.text))


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory/../UTC"])
async def test_a_window_time_zone_must_be_an_iana_name(
    client: httpx2.AsyncClient, zone: str
) -> None:
    saved = await client.post("/api/v1/windows", json={"recurrence": "daily", "timezone": zone})
    error = assert_envelope(saved, 422, "validation_error")
    assert "IANA" in error["details"]["fields"]["timezone"]
    # The editor's preview answers a draft's problems (200), the same message.
    response = await client.post(
        "/api/v1/windows/preview", json={"recurrence": "daily", "timezone": zone}
    )
    assert response.status_code == 200
    assert response.json()["problems"]["timezone"] == error["details"]["fields"]["timezone"]


async def test_the_all_hosts_confirmation_is_asked_for_in_words(
    web_rig: WebRig, client: httpx2.AsyncClient
) -> None:
    await web_rig.db.run(
        lambda conn: insert_host(
            conn, name="all.example.test", address="127.108.251.30", groups=["everyone"]
        )
    )
    token = form_token((await client.get("/deploy")).text)
    response = await client.post(
        "/deploy", data={"csrf_token": token, "group": "everyone", "kind": "patch"}
    )
    assert response.status_code == 422, response.text[-2000:]
    message = shown_errors(response.text)["all_hosts"]
    assert "confirm with all_hosts" not in message
    assert "every host" in message
