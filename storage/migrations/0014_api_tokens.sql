-- API tokens for automation (R-7.6) and the short-lived credentials exchanged for them (R-7.3).
-- A token is shown once; only its SHA-256 is kept. Its rights are computed on every request from
-- its owner's CURRENT role and groups, intersected with its scope and optional group restriction.

CREATE TABLE api_tokens (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scope         text NOT NULL CHECK (scope IN ('read', 'operate', 'metrics')),
    token_hash    bytea NOT NULL UNIQUE,
    hint          text NOT NULL,            -- the first characters, to recognise it in lists
    restricted    boolean NOT NULL DEFAULT false,  -- true: only the hosts of api_token_groups
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT '',
    expires_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_by    text NOT NULL DEFAULT ''
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- A restricted token whose groups are all deleted sees nothing (restricted stays true).
CREATE TABLE api_token_groups (
    token_id  bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    group_id  bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (token_id, group_id)
);

-- Refresh tokens of the JWT exchange: 1 h sliding, rotated on use. A family starts with an
-- exchange of an API token; presenting a rotated member again revokes the whole family.
CREATE TABLE api_refresh_tokens (
    id            bigserial PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    api_token_id  bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    family_id     uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    rotated_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_refresh_tokens_family_idx ON api_refresh_tokens (family_id);

-- Revoked refresh families: access JWTs of the family are refused too.
CREATE TABLE api_token_families (
    family_id     uuid PRIMARY KEY,
    api_token_id  bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    revoked_at    timestamptz
);

-- ES256 signing keys of the access JWTs. The private key is stored only sealed with the key
-- outside the database (ca.Sealer); a key signs until sign_until and verifies until retire_at
-- (later than sign_until by more than an access token's lifetime: the rotation overlap).
CREATE TABLE jwt_signing_keys (
    kid             text PRIMARY KEY,
    public_pem      text NOT NULL,
    private_sealed  text NOT NULL,
    created_at      timestamptz NOT NULL,
    sign_until      timestamptz NOT NULL,
    retire_at       timestamptz NOT NULL
);
