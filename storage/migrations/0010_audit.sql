-- The audit log (R-9.1, issue 13): a tamper-evident chain. Every entry's MAC is
-- HMAC-SHA256(key, previous MAC || canonical JSON of the entry), with a key kept outside the
-- database (ca.audit_key). Ids are gapless (previous id + 1, assigned under an advisory lock by
-- storage.audit.append), so a deleted row shows as a gap as well as a broken link.

CREATE TABLE audit_entries (
    id          bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    source      text NOT NULL DEFAULT '',
    request_id  text NOT NULL DEFAULT '',
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    before      jsonb,
    after       jsonb,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'failed', 'denied')),
    detail      text NOT NULL DEFAULT '',
    mac         text NOT NULL
);
CREATE INDEX audit_entries_at_idx ON audit_entries (at);
CREATE INDEX audit_entries_actor_idx ON audit_entries (actor, id);
CREATE INDEX audit_entries_action_idx ON audit_entries (action, id);
CREATE INDEX audit_entries_target_idx ON audit_entries (target, id);

-- The chain's head: the last entry's id and MAC, signed. Truncating the tail of the log
-- (deleting the newest entries) leaves a head that names entries no longer there.
CREATE TABLE audit_head (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id  bigint NOT NULL,
    last_mac text NOT NULL,
    mac      text NOT NULL
);

-- Signed checkpoints written before pruning: the id, MAC and count of entries at the cut, so
-- that the remaining chain still verifies from there. Checkpoints chain among themselves.
CREATE TABLE audit_checkpoints (
    id        bigint PRIMARY KEY,
    at        timestamptz NOT NULL,
    cutoff    timestamptz NOT NULL,
    last_id   bigint NOT NULL,
    last_mac  text NOT NULL,
    count     bigint NOT NULL,
    mac       text NOT NULL
);
