-- OIDC single sign-on (R-7.5): the one provider configuration (admins edit it on Settings →
-- Single sign-on), the mapping of a group/role claim value to a role and groups, the SSO
-- identities (issuer, subject) linked to users, and the logins in progress (state, nonce and
-- PKCE verifier between the redirect to the provider and its callback).

CREATE TABLE sso_config (
    id                    integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    enabled               boolean NOT NULL DEFAULT false,
    preset                text NOT NULL DEFAULT 'oidc' CHECK (preset IN ('oidc', 'entra')),
    display_name          text NOT NULL DEFAULT '',
    discovery_url         text NOT NULL DEFAULT '',
    tenant_id             text NOT NULL DEFAULT '',
    client_id             text NOT NULL DEFAULT '',
    client_secret_sealed  text NOT NULL DEFAULT '',  -- ca.Sealer; the key is not in the database
    groups_claim          text NOT NULL DEFAULT 'groups',
    updated_at            timestamptz NOT NULL DEFAULT now(),
    updated_by            text NOT NULL DEFAULT ''
);

-- A claim value (a group object id, an app role name, ...) grants a role and groups; a user
-- whose claims match several gets the strongest role and the union of the groups.
CREATE TABLE sso_mappings (
    claim_value  text PRIMARY KEY CHECK (length(claim_value) BETWEEN 1 AND 256),
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL DEFAULT ''
);
CREATE TABLE sso_mapping_groups (
    claim_value  text NOT NULL REFERENCES sso_mappings (claim_value) ON DELETE CASCADE,
    group_id     bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (claim_value, group_id)
);

-- Users created by an SSO login have no local password.
ALTER TABLE users ADD COLUMN sso_only boolean NOT NULL DEFAULT false;

CREATE TABLE sso_identities (
    id             bigserial PRIMARY KEY,
    issuer         text NOT NULL,
    subject        text NOT NULL,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email          text NOT NULL DEFAULT '',  -- shown to admins only; never used to link
    linked_at      timestamptz NOT NULL DEFAULT now(),
    linked_by      text NOT NULL DEFAULT '',
    last_login_at  timestamptz,
    UNIQUE (issuer, subject)
);
CREATE INDEX sso_identities_user_idx ON sso_identities (user_id);

-- A login in progress, found by the hash of the browser's binding cookie, consumed once.
CREATE TABLE sso_logins (
    browser_hash   bytea PRIMARY KEY,
    state          text NOT NULL,
    nonce          text NOT NULL,
    code_verifier  text NOT NULL,
    redirect_uri   text NOT NULL,
    next_path      text NOT NULL DEFAULT '/',
    expires_at     timestamptz NOT NULL
);
CREATE INDEX sso_logins_expiry_idx ON sso_logins (expires_at);
