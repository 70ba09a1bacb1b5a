"""Single sign-on: the provider configuration, claim mappings and identity links (admins:
``Action.MANAGE_USERS``), and the sign-in itself (anyone, before a session exists).

A sign-in (``begin`` then ``complete``) never links by e-mail: an identity (issuer, subject)
seen for the first time becomes a new user without a password when its claims map to a role,
and is refused otherwise; only an admin links an identity to an existing account
(``link``). Role and groups follow the claims at every sign-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ca import Sealer, SealError
from storage import Conflict, LastAdmin, NotFound, get_user_by_id
from storage.sso import (
    PendingLogin,
    SsoConfig,
    SsoIdentity,
    SsoLogin,
    SsoMapping,
    delete_mapping,
    identities_of,
    link_identity,
    list_mappings,
    load_sso_config,
    save_mapping,
    save_sso_config,
    sso_login,
    start_login,
    take_login,
    unlink_identity,
    unmap_sso_user,
)

from .. import audit
from ..authz import Action, require, scope_changed
from ..handle import AlreadyExists, InvalidInput, Missing
from ..sso import (
    CLIENT_SECRET_ENV,
    SCOPES,
    Check,
    OidcClient,
    SsoError,
    map_claims,
    name_hint,
    subject_of,
    url_problem,
)
from .base import Principal, System

log = logging.getLogger(__name__)

LOGIN_TTL = dt.timedelta(minutes=10)
MULTI_TENANT = frozenset({"common", "organizations", "consumers"})


@dataclass(frozen=True)
class SsoSettingsInput:
    """What the admin submits on Settings → Single sign-on (already length-checked)."""

    enabled: bool
    preset: str
    display_name: str
    discovery_url: str
    tenant_id: str
    client_id: str
    client_secret: str  # empty: keep the stored one
    clear_secret: bool
    groups_claim: str


def browser_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def client_secret(config: SsoConfig, sealer: Sealer | None) -> str:
    """The environment's secret if set, else the stored one unsealed ('' when none)."""
    from_env = os.environ.get(CLIENT_SECRET_ENV, "")
    if from_env:
        return from_env
    if not config.client_secret_sealed or sealer is None:
        return ""
    try:
        return sealer.unseal(config.client_secret_sealed)
    except SealError:
        log.error("the stored OIDC client secret cannot be unsealed with this sealing key")
        return ""


def button_name(config: SsoConfig) -> str:
    if config.display_name:
        return config.display_name
    return "Microsoft Entra ID" if config.preset == "entra" else "single sign-on"


async def login_button(sys: System) -> str:
    """The provider's name for the login page's "Sign in with …" button ('' when off)."""
    config = await sys.db.run(load_sso_config)
    return button_name(config) if config.enabled else ""


# -- admin -------------------------------------------------------------------------------------


async def settings(sys: System, who: Principal) -> tuple[SsoConfig, list[SsoMapping]]:
    require(who, Action.MANAGE_USERS)
    return await sys.db.run(load_sso_config), await sys.db.run(list_mappings)


async def save_settings(
    sys: System, who: Principal, data: SsoSettingsInput, sealer: Sealer | None
) -> SsoConfig:
    require(who, Action.MANAGE_USERS)
    problems: dict[str, str] = {}
    if data.preset not in ("oidc", "entra"):
        problems["preset"] = "choose Entra ID or another OpenID Connect provider"
    if data.preset == "entra":
        if data.tenant_id.lower() in MULTI_TENANT:
            problems["tenant_id"] = (
                "use your directory's own tenant id: with 'common', 'organizations' or "
                "'consumers' the tokens' issuer is not known in advance"
            )
        elif not _tenant_ok(data.tenant_id):
            problems["tenant_id"] = "the directory (tenant) id: a GUID or a verified domain"
    elif data.discovery_url or data.enabled:
        problem = url_problem(data.discovery_url)
        if problem:
            problems["discovery_url"] = f"the discovery URL {problem}"
    if data.enabled and not data.client_id:
        problems["client_id"] = "the application (client) id is needed to enable sign-in"
    if not data.groups_claim:
        problems["groups_claim"] = "name the claim that carries groups or roles (e.g. groups)"
    for name in ("display_name", "discovery_url", "tenant_id", "client_id", "groups_claim"):
        if not printable(getattr(data, name)):
            problems[name] = "no control characters"
    if not printable(data.client_secret):
        problems["client_secret"] = "no control characters"
    old = await sys.db.run(load_sso_config)
    sealed = "" if data.clear_secret else old.client_secret_sealed
    if data.client_secret:
        if sealer is None:
            problems["client_secret"] = (
                f"no sealing key is available to store a secret; set ${CLIENT_SECRET_ENV}"
            )
        else:
            sealed = sealer.seal(data.client_secret)
    if problems:
        raise InvalidInput.of(problems)
    config = SsoConfig(
        enabled=data.enabled,
        preset=data.preset,
        display_name=data.display_name,
        discovery_url=data.discovery_url if data.preset == "oidc" else "",
        tenant_id=data.tenant_id if data.preset == "entra" else "",
        client_id=data.client_id,
        client_secret_sealed=sealed,
        groups_claim=data.groups_claim,
    )
    secret = (
        "removed"
        if data.clear_secret and not data.client_secret
        else ("replaced" if data.client_secret else "unchanged")
    )
    await audit.audited(
        sys,
        audit.entry(
            who,
            "sso.config.update",
            "settings:sso",
            before=_public(old),
            after={**_public(config), "client_secret": secret},
        ),
        lambda conn: save_sso_config(conn, config, by=who.username),
    )
    return config


def _public(config: SsoConfig) -> dict[str, object]:
    """What the audit log keeps of a configuration: everything but the secret."""
    return {
        "enabled": config.enabled,
        "preset": config.preset,
        "display_name": config.display_name,
        "discovery_url": config.discovery_url,
        "tenant_id": config.tenant_id,
        "client_id": config.client_id,
        "groups_claim": config.groups_claim,
        "client_secret_stored": bool(config.client_secret_sealed),
    }


def printable(text: str) -> bool:
    """No control characters (PostgreSQL cannot store NUL; none belongs in these values)."""
    return text.isprintable()


def _tenant_ok(tenant: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
    return 0 < len(tenant) <= 253 and set(tenant) <= allowed and tenant[0] not in ".-"


async def test_settings(
    sys: System, who: Principal, client: OidcClient, sealer: Sealer | None
) -> list[Check]:
    require(who, Action.MANAGE_USERS)
    config = await sys.db.run(load_sso_config)
    return await client.test(config, client_secret(config, sealer))


async def save_claim_mapping(
    sys: System, who: Principal, claim_value: str, role: str, group_ids: tuple[int, ...]
) -> None:
    require(who, Action.MANAGE_USERS)
    if not 0 < len(claim_value) <= 256 or not printable(claim_value):
        raise InvalidInput("claim_value", "a claim value of 1 to 256 printable characters")
    if role not in ("admin", "operator", "auditor"):
        raise InvalidInput("role", "admin, operator or auditor")
    try:
        await audit.audited(
            sys,
            audit.entry(
                who,
                "sso.mapping.save",
                f"sso-mapping:{claim_value}",
                after={"role": role, "group_ids": sorted(set(group_ids))},
            ),
            lambda conn: save_mapping(conn, claim_value, role, group_ids, by=who.username),
        )
    except NotFound as exc:
        raise InvalidInput("group_ids", str(exc)) from None


async def delete_claim_mapping(sys: System, who: Principal, claim_value: str) -> bool:
    require(who, Action.MANAGE_USERS)
    if not printable(claim_value):
        return False  # no mapping has one (they are refused when saved)
    return await audit.audited(
        sys,
        lambda deleted: audit.entry(
            who,
            "sso.mapping.delete",
            f"sso-mapping:{claim_value}",
            outcome="ok" if deleted else "failed",
            detail="" if deleted else "no such mapping",
        ),
        delete_mapping,
        claim_value,
    )


async def require_user(sys: System, who: Principal, user_id: int) -> None:
    """An admin asking about a user that exists (``Missing`` otherwise)."""
    require(who, Action.MANAGE_USERS)
    if await sys.db.run(get_user_by_id, user_id) is None:
        raise Missing(f"no user with id {user_id}")


async def identities(sys: System, who: Principal, user_id: int | None = None) -> list[SsoIdentity]:
    require(who, Action.MANAGE_USERS)
    return await sys.db.run(identities_of, user_id)


async def link(sys: System, who: Principal, user_id: int, issuer: str, subject: str) -> SsoIdentity:
    """An admin's explicit link of (issuer, subject) to an account."""
    require(who, Action.MANAGE_USERS)
    problems = {}
    if not 0 < len(issuer) <= 512 or not printable(issuer):
        problems["issuer"] = "the provider's issuer (as in its id_tokens), 1 to 512 characters"
    if not 0 < len(subject) <= 256 or not printable(subject):
        problems["subject"] = "the identity's subject (sub, or oid for Entra), 1 to 256 characters"
    if problems:
        raise InvalidInput.of(problems)
    try:
        return await audit.audited(
            sys,
            lambda found: audit.entry(
                who,
                "sso.identity.link",
                f"user:{found.username}",
                after={"issuer": issuer, "subject": subject},
            ),
            lambda conn: link_identity(conn, user_id, issuer, subject, by=who.username),
        )
    except NotFound:
        raise Missing(f"no user with id {user_id}") from None
    except Conflict as exc:
        raise AlreadyExists("subject", str(exc)) from None


async def unlink(sys: System, who: Principal, user_id: int, identity_id: int) -> SsoIdentity:
    require(who, Action.MANAGE_USERS)
    try:
        return await audit.audited(
            sys,
            lambda gone: audit.entry(
                who,
                "sso.identity.unlink",
                f"user:{gone.username}",
                before={"issuer": gone.issuer, "subject": gone.subject},
            ),
            unlink_identity,
            user_id,
            identity_id,
        )
    except NotFound as exc:
        raise Missing(str(exc)) from None


async def unlink_key(sys: System, who: Principal, user_id: int, issuer: str, subject: str) -> bool:
    """Unlink (issuer, subject) from the user if linked to it; False when it was not."""
    await require_user(sys, who, user_id)
    linked = [
        i
        for i in await sys.db.run(identities_of, user_id)
        if (i.issuer, i.subject) == (issuer, subject)
    ]
    if not linked:
        return False
    try:
        await unlink(sys, who, user_id, linked[0].id)
    except Missing:  # unlinked meanwhile
        return False
    return True


# -- signing in --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the value of its binding cookie."""

    location: str
    browser_token: str


MAX_AUTH_AGE = 300  # seconds: asked of the provider (max_age) and checked (auth_time)
AUTH_TIME_LEEWAY = 60


async def begin(sys: System, client: OidcClient, redirect_uri: str, next_path: str) -> Started:
    """Start a sign-in: a fresh state, nonce and PKCE verifier remembered for this browser."""
    config = await sys.db.run(load_sso_config)
    if not config.enabled:
        raise SsoError("single sign-on is not enabled", 404)
    meta = await client.metadata(client.discovery_url(config))
    pending = PendingLogin(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(48),
        redirect_uri=redirect_uri,
        next_path=next_path,
    )
    token = secrets.token_urlsafe(32)
    await sys.db.run(start_login, browser_hash(token), pending, LOGIN_TTL)
    location = prepare_grant_uri(
        meta.authorization_endpoint,
        config.client_id,
        "code",
        redirect_uri=redirect_uri,
        scope=SCOPES,
        state=pending.state,
        nonce=pending.nonce,
        code_challenge=create_s256_code_challenge(pending.code_verifier),
        code_challenge_method="S256",
        max_age=MAX_AUTH_AGE,  # the provider re-authenticates an older session of its own
    )
    return Started(location, token)


@dataclass(frozen=True)
class Completed:
    login: SsoLogin
    next_path: str
    issuer: str
    subject: str


async def complete(
    sys: System,
    client: OidcClient,
    sealer: Sealer | None,
    browser_token: str,
    params: dict[str, str],
) -> Completed:
    """Finish a sign-in from the provider's redirect (``params``: its query). Raises
    ``SsoError`` with the reason for the person signing in (and audits the refusal)."""
    try:
        return await _complete(sys, client, sealer, browser_token, params)
    except SsoError as exc:
        await audit.record(
            sys,
            audit.entry(
                "anonymous",
                "sso.login",
                f"sso:{exc.identity}" if exc.identity else "sso",
                outcome="failed",
                detail=str(exc),
            ),
        )
        raise


async def _complete(
    sys: System,
    client: OidcClient,
    sealer: Sealer | None,
    browser_token: str,
    params: dict[str, str],
) -> Completed:
    pending = await sys.db.run(take_login, browser_hash(browser_token)) if browser_token else None
    if pending is None:
        raise SsoError("this sign-in expired or was started in another browser; start again", 400)
    if not secrets.compare_digest(params.get("state", "").encode(), pending.state.encode()):
        raise SsoError("the sign-in's state does not match (a forged or stale redirect)", 400)
    if params.get("error"):
        detail = params.get("error_description", "")[:200]
        raise SsoError(f"the provider refused the sign-in: {params['error'][:100]} {detail}")
    code = params.get("code", "")
    if not code:
        raise SsoError("the provider sent no authorization code", 400)
    config = await sys.db.run(load_sso_config)
    if not config.enabled:
        raise SsoError("single sign-on is not enabled", 404)
    meta = await client.metadata(client.discovery_url(config))
    secret = client_secret(config, sealer)
    token = await client.exchange(
        meta, config.client_id, secret, code, pending.code_verifier, pending.redirect_uri
    )
    claims = await client.validate_id_token(
        token.get("id_token"), meta, config.client_id, pending.nonce
    )
    if "_claim_names" in claims and config.groups_claim not in claims:
        raise SsoError(
            "the provider left out your groups (too many to list: a group overage); ask an "
            "administrator to emit only the groups assigned to the application"
        )
    subject = subject_of(claims, config.preset)
    if len(subject) > 256 or not printable(subject):
        raise SsoError("the id_token's subject is not usable (over 256 or control characters)")
    auth_time = claims.get("auth_time")  # a session here counts as a fresh second factor
    if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
        auth_time = None  # none sent: the provider is trusted to have honoured max_age
    if auth_time is not None and client.clock() - auth_time > MAX_AUTH_AGE + AUTH_TIME_LEEWAY:
        raise SsoError(
            "the provider did not authenticate you within the last 5 minutes (its auth_time "
            "is older); sign out at the provider or sign in there again, then retry",
            identity=f"{meta.issuer} {subject}",
        )
    mappings = await sys.db.run(list_mappings)
    mapped = map_claims(claims, config.groups_claim, mappings)
    if mapped is None:
        issuer = meta.issuer
        ended = await audit.audited(
            sys,
            lambda done: (
                None
                if done is None
                else audit.entry(
                    f"sso:{issuer} {subject}",
                    "sso.unmapped",
                    f"user:{done.username}",
                    after={
                        "sessions_ended": done.sessions_ended,
                        "tokens_revoked": done.tokens_revoked,
                    },
                )
            ),  # fmt: skip
            lambda conn: unmap_sso_user(conn, issuer, subject),
        )
        if ended is not None and ended.sessions_ended:
            scope_changed(sys.db)  # its open live sockets close too
        log.info(
            "sso: %s %s refused: no mapped value in claim %r",
            meta.issuer,
            subject,
            config.groups_claim,
        )
        raise SsoError(
            f"your account is not given a role here (none of its '{config.groups_claim}' "
            "values is mapped); ask an administrator",
            identity=f"{meta.issuer} {subject}",
        )
    email = claims.get("email")
    if not isinstance(email, str) or len(email) > 320 or not printable(email):
        email = ""  # shown to admins only; a value the database cannot keep is left out
    try:
        login = await audit.audited(
            sys,
            lambda done: audit.entry(
                f"user:{done.user.username}",
                "sso.login",
                f"user:{done.user.username}",
                after={
                    "issuer": meta.issuer,
                    "subject": subject,
                    "role": done.user.role,
                    "group_ids": list(done.user.group_ids),
                    "created": done.created,
                },
            ),
            lambda conn: sso_login(
                conn,
                meta.issuer,
                subject,
                role=mapped.role,
                group_ids=mapped.group_ids,
                name_hint=name_hint(claims),
                email=email,
            ),
        )
    except LastAdmin:
        raise SsoError(
            "signing in would demote the last active admin; another admin must exist first",
            409,
            identity=f"{meta.issuer} {subject}",
        ) from None
    except Conflict as exc:
        who = f"{meta.issuer} {subject}"
        raise SsoError(f"{exc}; ask an administrator", 403, identity=who) from None
    except NotFound:  # a mapped group deleted between reading the mapping and now
        raise SsoError("a group your role maps to no longer exists; try again", 409) from None
    if not login.created and login.role_before != login.user.role:
        scope_changed(sys.db)
    return Completed(login, pending.next_path, meta.issuer, subject)
