"""The Settings page (issue 14 item 6): repository configuration stored and edited by admins,
with the same rules as the API (``/api/v1/repo-configs``). Role denials: the authz matrix."""

from __future__ import annotations

import httpx2

from .conftest import form_token

KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmDMEZ\n-----END PGP PUBLIC KEY BLOCK-----\n"


async def test_settings_page_saves_a_repo_config_that_the_api_and_agents_then_get(
    client: httpx2.AsyncClient,
) -> None:
    page = await client.get("/settings")
    assert page.status_code == 200
    assert '<a href="/settings" aria-current="page">Settings</a>' in page.text
    assert "No repository configuration stored." in page.text
    form = {
        "csrf_token": form_token(page.text),
        "distro_id": "debian",
        "keyring_path": "/etc/apt/keyrings/internal.gpg",
        "gpg_public_key": KEY,
        "sources_config": "deb https://repo.example.com/debian bookworm main\n",
    }
    saved = await client.post("/settings/repo-configs", data=form)
    assert saved.status_code == 303
    assert saved.headers["location"].startswith("/settings?notice=")
    listed = (await client.get("/api/v1/repo-configs")).json()["repo_configs"]
    assert listed == [{k: v for k, v in form.items() if k != "csrf_token"}]
    served = await client.get("/api/v1/pki/repo-config", params={"distro_id": "debian"})
    assert served.json()["keyring_path"] == "/etc/apt/keyrings/internal.gpg"
    shown = (await client.get("/settings")).text
    assert 'data-distro="debian"' in shown and "/etc/apt/keyrings/internal.gpg" in shown
    # the same distro id again replaces it
    replaced = await client.post("/settings/repo-configs", data=form | {"keyring_path": ""})
    assert replaced.status_code == 303
    listed = (await client.get("/api/v1/repo-configs")).json()["repo_configs"]
    assert len(listed) == 1 and listed[0]["keyring_path"] == ""


async def test_settings_page_shows_field_errors_beside_the_fields_and_keeps_the_input(
    client: httpx2.AsyncClient,
) -> None:
    csrf = form_token((await client.get("/settings")).text)
    refused = await client.post(
        "/settings/repo-configs",
        data={
            "csrf_token": csrf,
            "distro_id": "Bad Id!",
            "keyring_path": "/etc/apt/keyrings/../../shadow",
            "sources_config": "deb https://kept.example.com stable main",
        },
    )
    assert refused.status_code == 422
    assert 'id="repo-distro-error"' in refused.text
    assert 'id="repo-keyring-error"' in refused.text
    assert "without &#39;..&#39;" in refused.text or "without '..'" in refused.text
    assert "deb https://kept.example.com stable main</textarea>" in refused.text
    assert (await client.get("/api/v1/repo-configs")).json()["repo_configs"] == []


async def test_settings_page_deletes_a_repo_config_and_says_when_there_was_none(
    client: httpx2.AsyncClient,
) -> None:
    assert (
        await client.post("/api/v1/repo-configs", json={"distro_id": "rocky"})
    ).status_code == 200
    page = (await client.get("/settings")).text
    assert 'data-confirm="Delete the repository configuration for rocky?' in page
    csrf = form_token(page)
    deleted = await client.post(
        "/settings/repo-configs/delete", data={"csrf_token": csrf, "distro_id": "rocky"}
    )
    assert deleted.status_code == 303 and "deleted" in deleted.headers["location"]
    assert (await client.get("/api/v1/repo-configs")).json()["repo_configs"] == []
    again = await client.post(
        "/settings/repo-configs/delete", data={"csrf_token": csrf, "distro_id": "rocky"}
    )
    assert again.status_code == 303 and "no+configuration" in again.headers["location"]
    too_long = await client.post(
        "/settings/repo-configs/delete", data={"csrf_token": csrf, "distro_id": "x" * 65}
    )
    assert too_long.status_code == 422 and 'role="alert"' in too_long.text
