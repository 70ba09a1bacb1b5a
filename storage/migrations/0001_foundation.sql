-- Hosts, groups and settings: the foundation every later table hangs off.

CREATE TABLE hosts (
    id            bigserial PRIMARY KEY,
    -- What the operator registered: a lower-case FQDN or an IPv4/IPv6 address. Unique.
    name          text NOT NULL UNIQUE CHECK (name <> '' AND name = lower(name)),
    -- The address the manager connects to (resolved at registration, re-resolved on change).
    address       inet,
    port          integer NOT NULL DEFAULT 12443 CHECK (port BETWEEN 1 AND 65535),
    display_name  text NOT NULL DEFAULT '',
    paused        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE groups (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE host_groups (
    host_id   bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    group_id  bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (host_id, group_id)
);
CREATE INDEX host_groups_group_idx ON host_groups (group_id);

-- Settings changed at run time from the UI (the files in conf/ stay the source of the rest).
CREATE TABLE settings (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
