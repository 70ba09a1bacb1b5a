"""The pure parts of single sign-on: provider URLs, the Entra preset, claims to roles."""

from __future__ import annotations

import pytest

from storage.sso import SsoConfig, SsoMapping, username_for
from web.sso import discovery_url, map_claims, name_hint, subject_of, url_problem

MAPPINGS = [
    SsoMapping("admins", "admin", (1,)),
    SsoMapping("ops", "operator", (2, 3)),
    SsoMapping("web-ops", "operator", (3, 4)),
    SsoMapping("audit", "auditor", ()),
]


def test_entra_preset_discovers_by_tenant_and_uses_the_oid_as_subject() -> None:
    config = SsoConfig(preset="entra", tenant_id="contoso.onmicrosoft.com")
    assert discovery_url(config) == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
        "/.well-known/openid-configuration"
    )
    claims = {"sub": "pairwise-per-app", "oid": "00000000-1111-2222-3333-444444444444"}
    assert subject_of(claims, "entra") == claims["oid"]
    assert subject_of(claims, "oidc") == "pairwise-per-app"
    assert subject_of({"sub": "s"}, "entra") == "s"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://idp.example.com/.well-known/openid-configuration", True),
        ("http://127.0.0.1:8080/.well-known/openid-configuration", True),
        ("http://[::1]:8080/x", True),
        ("http://localhost/x", True),
        ("http://idp.example.com/x", False),
        ("ftp://idp.example.com/x", False),
        ("https://", False),
        ("", False),
        ("http://[::1/x", False),
    ],
)
def test_provider_urls_are_https_or_loopback_http(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (["ops"], ("operator", (2, 3))),
        (["ops", "web-ops"], ("operator", (2, 3, 4))),
        (["audit", "ops", "admins"], ("admin", (1, 2, 3))),
        ("audit", ("auditor", ())),  # one value as a string
        (["nothing", 7], None),
        (None, None),
    ],
)
def test_claims_map_to_the_strongest_role_and_the_union_of_groups(
    claim: object, expected: tuple[str, tuple[int, ...]] | None
) -> None:
    mapped = map_claims({"groups": claim}, "groups", MAPPINGS)
    assert (None if mapped is None else (mapped.role, mapped.group_ids)) == expected


def test_names_for_new_sso_users_are_valid_user_names() -> None:
    assert username_for(name_hint({"preferred_username": "Ann.Lee@Example.COM"})) == (
        "ann.lee.example.com"
    )
    assert username_for("  José Müller ") == "jos-m-ller"
    assert username_for("@@@") == "sso-user"
    assert len(username_for("x" * 300)) <= 56
    assert name_hint({"sub": "abc"}) == "abc"
