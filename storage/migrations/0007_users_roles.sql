-- Users, roles and their group scope (R-7.1, R-7.4). Roles: admin (everything), operator (hosts,
-- jobs, windows of their groups), auditor (read-only within their groups). user_groups is the
-- scope an operator or auditor has; admins see everything whatever their groups.

ALTER TABLE users
    ADD COLUMN state                text NOT NULL DEFAULT 'active'
                                    CHECK (state IN ('active', 'disabled')),
    ADD COLUMN must_change_password boolean NOT NULL DEFAULT false,
    ADD COLUMN failed_logins        integer NOT NULL DEFAULT 0,
    ADD COLUMN locked_until         timestamptz,
    ADD COLUMN created_by           text NOT NULL DEFAULT '',
    ADD COLUMN updated_by           text NOT NULL DEFAULT '',
    ADD COLUMN updated_at           timestamptz NOT NULL DEFAULT now();

-- User names are unique regardless of case.
CREATE UNIQUE INDEX users_username_lower_idx ON users (lower(username));

CREATE TABLE user_groups (
    user_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id  bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group_idx ON user_groups (group_id);

-- Session families (R-7.3). A login starts a family; rotating a session (a password change, a
-- privilege change) marks the old row rotated and inserts its successor in the same family. A
-- rotated token presented again means it was copied: the whole family is revoked. Rotated rows
-- are kept until their own expiry so that reuse can still be recognised.
ALTER TABLE sessions
    ADD COLUMN id         bigserial UNIQUE,
    ADD COLUMN family_id  uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN rotated_at timestamptz,
    ADD COLUMN address    text NOT NULL DEFAULT '',
    ADD COLUMN user_agent text NOT NULL DEFAULT '';
CREATE INDEX sessions_family_idx ON sessions (family_id);

-- Login-form tokens, single-use: issued with the form (hashed), consumed by the one POST.
CREATE TABLE login_tokens (
    token_hash  bytea PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX login_tokens_expiry_idx ON login_tokens (expires_at);
