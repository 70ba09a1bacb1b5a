-- Maintenance windows, blackouts, deployment jobs and their per-host rows (R-4, R-5).

CREATE TABLE maintenance_windows (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL DEFAULT '',
    host_id           bigint REFERENCES hosts (id) ON DELETE CASCADE,
    group_id          bigint REFERENCES groups (id) ON DELETE CASCADE,
    recurrence        text NOT NULL
        CHECK (recurrence IN ('once', 'daily', 'weekly', 'monthly_day', 'monthly_nth')),
    start_date        date NOT NULL,
    start_time        time NOT NULL,
    duration_minutes  integer NOT NULL CHECK (duration_minutes BETWEEN 1 AND 10080),
    timezone          text NOT NULL,
    weekdays          integer[] NOT NULL DEFAULT '{}',
    day_of_month      integer NOT NULL DEFAULT 1,
    short_month       text NOT NULL DEFAULT 'clamp' CHECK (short_month IN ('clamp', 'skip')),
    nth               integer NOT NULL DEFAULT 1,
    until             date,
    enabled           boolean NOT NULL DEFAULT true,
    auto_apply        text NOT NULL DEFAULT 'none' CHECK (auto_apply IN ('none', 'all', 'security')),
    allow_reboot      boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((host_id IS NULL) <> (group_id IS NULL))
);

-- Every change to a window, kept (R-5: "every window change is recorded").
CREATE TABLE window_changes (
    id         bigserial PRIMARY KEY,
    window_id  bigint NOT NULL,
    action     text NOT NULL CHECK (action IN ('created', 'updated', 'deleted')),
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL DEFAULT '',
    snapshot   jsonb NOT NULL
);

CREATE TABLE blackouts (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL DEFAULT '',
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at > starts_at)
);

CREATE TABLE jobs (
    id                 bigserial PRIMARY KEY,
    kind               text NOT NULL
        CHECK (kind IN ('patch', 'install', 'update', 'remove', 'reboot', 'rollback')),
    selection          text NOT NULL DEFAULT 'all' CHECK (selection IN ('all', 'security', 'list')),
    packages           jsonb NOT NULL DEFAULT '[]',
    schedule           text NOT NULL CHECK (schedule IN ('now', 'window')),
    allow_reboot       boolean NOT NULL DEFAULT false,
    reboot_delay_s     integer NOT NULL DEFAULT 0 CHECK (reboot_delay_s >= 0),
    batch_size         integer CHECK (batch_size > 0),
    batch_percent      integer CHECK (batch_percent BETWEEN 1 AND 100),
    failure_threshold  integer CHECK (failure_threshold >= 0),
    canary             boolean NOT NULL DEFAULT false,
    status             text NOT NULL DEFAULT 'queued' CHECK (status IN
        ('queued', 'running', 'succeeded', 'partially_failed', 'failed', 'cancelled')),
    rollback_of        bigint REFERENCES jobs (id),
    created_by         text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz
);
CREATE INDEX jobs_active_idx ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE job_hosts (
    id              bigserial PRIMARY KEY,
    job_id          bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    host_id         bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    batch           integer NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'waiting_window',
        'dispatched', 'running', 'rebooting', 'succeeded', 'failed', 'cancelled', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    agent_job_id    text,
    dispatched_at   timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    progress        integer NOT NULL DEFAULT 0,
    error_code      text NOT NULL DEFAULT '',
    error_message   text NOT NULL DEFAULT '',
    error_stderr    text NOT NULL DEFAULT '',
    packages_before jsonb,
    packages_after  jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, host_id)
);
CREATE INDEX job_hosts_host_idx ON job_hosts (host_id, state);
CREATE INDEX job_hosts_job_idx ON job_hosts (job_id, batch);

-- One automatic deployment per window occurrence (auto-apply), even across restarts.
CREATE TABLE window_runs (
    window_id         bigint NOT NULL REFERENCES maintenance_windows (id) ON DELETE CASCADE,
    occurrence_start  timestamptz NOT NULL,
    job_id            bigint REFERENCES jobs (id) ON DELETE SET NULL,
    PRIMARY KEY (window_id, occurrence_start)
);
