-- The persisted execution state machine of a job row (issue 10, design "Job row state machine"):
--   queued ─claim─▶ claimed ─POST written─▶ request_sent(sent_at) ─202─▶ accepted(agent_job_id)
--          ─▶ following ─GET /jobs/{id}─▶ succeeded | failed      (and skipped / cancelled)
-- with an owner and a lease, a permit (run_until) written by the coordinator and re-checked by
-- the claim, and one child record per attempt.

ALTER TABLE job_hosts DROP CONSTRAINT job_hosts_state_check;
-- Rows a previous version left in flight: with an agent job id they are followed; without one
-- the request may or may not have reached the agent, so they are reconciled, never resent blindly.
UPDATE job_hosts SET state = CASE WHEN agent_job_id IS NULL THEN 'request_sent' ELSE 'following' END
    WHERE state IN ('dispatched', 'running', 'rebooting');
ALTER TABLE job_hosts ADD CONSTRAINT job_hosts_state_check CHECK (state IN ('queued',
    'waiting_window', 'claimed', 'request_sent', 'accepted', 'following', 'succeeded', 'failed',
    'cancelled', 'skipped'));

ALTER TABLE job_hosts
    ADD COLUMN owner            text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN sent_at          timestamptz,
    -- The permit: the row may be claimed (and its request sent) only before this instant. The
    -- coordinator writes it when the row's window opens (the occurrence's end) or when an
    -- apply-now job's batch comes up ('infinity').
    ADD COLUMN run_until        timestamptz,
    -- What the agent says about the job while it is followed (running, rebooting), for display.
    ADD COLUMN agent_status     text NOT NULL DEFAULT '',
    -- Uptime before a reboot was asked for: a resumed reboot is confirmed by its reset.
    ADD COLUMN uptime_before    bigint,
    -- The separate reboot job an older agent (2.5.5) started after the patch job: accounted
    -- for, so that no later row adopts it as its own.
    ADD COLUMN reboot_job_id    text;
-- Migrated in-flight rows were sent when dispatched (a migrated reboot row being followed has
-- no uptime_before; its reboot is confirmed against this instant).
UPDATE job_hosts SET sent_at = dispatched_at WHERE state IN ('request_sent', 'following');

CREATE INDEX job_hosts_runnable_idx ON job_hosts (host_id, id) WHERE state = 'queued';
CREATE INDEX job_hosts_agent_job_idx ON job_hosts (host_id, agent_job_id)
    WHERE agent_job_id IS NOT NULL;

-- One record per attempt of a row: each attempt's error is kept; the row shows the last.
CREATE TABLE job_host_attempts (
    id            bigserial PRIMARY KEY,
    row_id        bigint NOT NULL REFERENCES job_hosts (id) ON DELETE CASCADE,
    host_id       bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    agent_job_id  text,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL,
    error_code    text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    UNIQUE (row_id, attempt)
);
CREATE INDEX job_host_attempts_host_idx ON job_host_attempts (host_id);
