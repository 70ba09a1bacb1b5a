-- Compliance and reports (issue 15): daily compliance snapshots, risk waivers and stored report
-- definitions.

-- One row per day and subject: the fleet (subject_id 0), a group, or a host (then exactly one
-- of compliant / noncompliant / unknown is 1). Rows outlive the raw data retention; no foreign
-- keys so that a removed host's history stays in the fleet's trend. ``backfilled`` rows were
-- reconstructed from patch history on the first run (freshness then is an estimate). A host
-- row records the host's groups that day, so scopes and group filters of the trend still
-- apply once the host is gone (a removed host has no host_groups rows left).
CREATE TABLE compliance_snapshots (
    day           date NOT NULL,
    subject       text NOT NULL CHECK (subject IN ('fleet', 'group', 'host')),
    subject_id    bigint NOT NULL,
    hosts         integer NOT NULL DEFAULT 0,
    compliant     integer NOT NULL DEFAULT 0,
    noncompliant  integer NOT NULL DEFAULT 0,
    unknown       integer NOT NULL DEFAULT 0,
    waived        integer NOT NULL DEFAULT 0,
    backfilled    boolean NOT NULL DEFAULT false,
    group_ids     bigint[] NOT NULL DEFAULT '{}',  -- a host row: its groups that day
    taken_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, subject_id, day)
);
CREATE INDEX compliance_snapshots_day_idx ON compliance_snapshots (day);

-- An accepted risk on one host: a package, a CVE, or (both empty) every pending patch, until
-- expires_at. Revoked waivers are kept (the evidence pack lists them).
CREATE TABLE risk_waivers (
    id          bigserial PRIMARY KEY,
    host_id     bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    package     text NOT NULL DEFAULT '',
    cve         text NOT NULL DEFAULT '',
    owner       text NOT NULL CHECK (owner <> ''),
    reason      text NOT NULL CHECK (reason <> ''),
    expires_at  timestamptz NOT NULL,
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    revoked_by  text NOT NULL DEFAULT ''
);
CREATE INDEX risk_waivers_host_idx ON risk_waivers (host_id) WHERE revoked_at IS NULL;

-- A scheduled report: stored for download until the notifications work delivers it by e-mail.
CREATE TABLE report_definitions (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (name <> ''),
    report      text NOT NULL
        CHECK (report IN ('compliance', 'patch-history', 'exposure', 'reboots')),
    format      text NOT NULL CHECK (format IN ('json', 'csv', 'pdf')),
    filters     jsonb NOT NULL DEFAULT '{}',
    recipients  text[] NOT NULL DEFAULT '{}',
    schedule    text NOT NULL,
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
