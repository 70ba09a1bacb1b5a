-- What the host actors learn: current state on the host row, transitions, patches, packages,
-- and discovery scans.

ALTER TABLE hosts
    ADD COLUMN health            text NOT NULL DEFAULT 'pending'
        CHECK (health IN ('pending', 'healthy', 'degraded', 'unreachable')),
    ADD COLUMN health_reason     text NOT NULL DEFAULT '',
    ADD COLUMN health_changed_at timestamptz,
    ADD COLUMN last_seen_at      timestamptz,
    ADD COLUMN last_health_poll_at timestamptz,
    ADD COLUMN last_patch_poll_at  timestamptz,
    ADD COLUMN last_error        text NOT NULL DEFAULT '',
    ADD COLUMN hostname          text NOT NULL DEFAULT '',
    ADD COLUMN os                text NOT NULL DEFAULT '',
    ADD COLUMN os_version        text NOT NULL DEFAULT '',
    ADD COLUMN kernel            text NOT NULL DEFAULT '',
    ADD COLUMN architecture      text NOT NULL DEFAULT '',
    ADD COLUMN agent_version     text NOT NULL DEFAULT '',
    ADD COLUMN uptime_seconds    bigint,
    ADD COLUMN last_boot_at      timestamptz,
    ADD COLUMN pending_reboot    boolean NOT NULL DEFAULT false,
    ADD COLUMN package_db_clean  boolean,
    ADD COLUMN crl_status        text NOT NULL DEFAULT '',
    ADD COLUMN gpg_key_status    text NOT NULL DEFAULT '',
    ADD COLUMN pending_patches   integer NOT NULL DEFAULT 0,
    ADD COLUMN security_patches  integer NOT NULL DEFAULT 0,
    ADD COLUMN reboot_patches    integer NOT NULL DEFAULT 0;
CREATE INDEX hosts_health_idx ON hosts (health);

-- Transitions only, never one row per poll (R-3.3, R-11.5).
CREATE TABLE host_health_history (
    id          bigserial PRIMARY KEY,
    host_id     bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    reason      text NOT NULL DEFAULT ''
);
CREATE INDEX host_health_history_host_idx ON host_health_history (host_id, at DESC);

-- One row per (host, patch) episode: open while pending, resolved_at set when it disappears.
CREATE TABLE host_patches (
    id                 bigserial PRIMARY KEY,
    host_id            bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name               text NOT NULL,
    current_version    text NOT NULL DEFAULT '',
    available_version  text NOT NULL DEFAULT '',
    severity           text NOT NULL DEFAULT 'medium',
    cve_ids            text[] NOT NULL DEFAULT '{}',
    requires_reboot    boolean NOT NULL DEFAULT false,
    first_seen_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at        timestamptz
);
CREATE UNIQUE INDEX host_patches_open_idx ON host_patches (host_id, name) WHERE resolved_at IS NULL;
CREATE INDEX host_patches_resolved_idx ON host_patches (resolved_at) WHERE resolved_at IS NOT NULL;

CREATE TABLE host_packages (
    host_id   bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name      text NOT NULL,
    version   text NOT NULL,
    PRIMARY KEY (host_id, name)
);

CREATE TABLE discovery_scans (
    id           bigserial PRIMARY KEY,
    cidr         cidr NOT NULL,
    status       text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'finished', 'cancelled', 'failed')),
    total        integer NOT NULL,
    probed       integer NOT NULL DEFAULT 0,
    found        integer NOT NULL DEFAULT 0,
    error        text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE TABLE discovery_results (
    scan_id        bigint NOT NULL REFERENCES discovery_scans (id) ON DELETE CASCADE,
    address        inet NOT NULL,
    hostname       text NOT NULL DEFAULT '',
    os             text NOT NULL DEFAULT '',
    agent_version  text NOT NULL DEFAULT '',
    PRIMARY KEY (scan_id, address)
);

-- Tell a running server that hosts changed (CLI edits, other processes).
CREATE FUNCTION notify_hosts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hosts_changed', '');
    RETURN NULL;
END $$;
CREATE TRIGGER hosts_changed AFTER INSERT OR DELETE OR UPDATE OF name, address, port, paused
    ON hosts FOR EACH STATEMENT EXECUTE FUNCTION notify_hosts_changed();
CREATE TRIGGER host_groups_changed AFTER INSERT OR DELETE OR UPDATE ON host_groups
    FOR EACH STATEMENT EXECUTE FUNCTION notify_hosts_changed();
