-- Mandatory second factor for local accounts (R-7.2, issue 12).
--
-- mfa_totp: one TOTP secret per user, sealed with the key outside the database (ca.Sealer);
-- confirmed_at is NULL while enrolment waits for the first code. mfa_totp_used: the time steps
-- whose code has been accepted (a code is refused a second time for its step: replay).
-- mfa_recovery_codes: ten single-use codes, SHA-256 hashed. webauthn_credentials: several named
-- authenticators per user with their signature counters. pending_logins: the short-lived,
-- single-use state between a correct password and the second factor (no session exists yet).
-- sessions.mfa_at: when the session last proved a second factor (NULL: a user without one, who
-- reaches only the enrolment pages).

CREATE TABLE mfa_totp (
    user_id       bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz
);

CREATE TABLE mfa_totp_used (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    step     bigint NOT NULL,
    used_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, step)
);

CREATE TABLE mfa_recovery_codes (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    UNIQUE (user_id, code_hash)
);

CREATE TABLE webauthn_credentials (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id bytea NOT NULL UNIQUE,
    public_key    bytea NOT NULL,
    sign_count    bigint NOT NULL DEFAULT 0,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    UNIQUE (user_id, name)
);
CREATE INDEX webauthn_credentials_user_idx ON webauthn_credentials (user_id);

CREATE TABLE pending_logins (
    token_hash  bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address     text NOT NULL DEFAULT '',
    user_agent  text NOT NULL DEFAULT '',
    next_path   text NOT NULL DEFAULT '/',
    challenge   bytea,
    attempts    integer NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX pending_logins_expiry_idx ON pending_logins (expires_at);

ALTER TABLE sessions ADD COLUMN mfa_at timestamptz;
