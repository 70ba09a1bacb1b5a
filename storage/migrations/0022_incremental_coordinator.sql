-- The incremental job coordinator (issue 17 point 3).
--
-- 1. A row's package snapshots (installed versions before and after it ran) move to a side
--    table: written by the executor, read by the job page, API and reports, never by the
--    coordinator, whose reads of job_hosts stay small.
CREATE TABLE job_host_snapshots (
    row_id          bigint PRIMARY KEY REFERENCES job_hosts (id) ON DELETE CASCADE,
    packages_before jsonb,
    packages_after  jsonb
);
INSERT INTO job_host_snapshots (row_id, packages_before, packages_after)
    SELECT id, packages_before, packages_after FROM job_hosts
    WHERE packages_before IS NOT NULL OR packages_after IS NOT NULL;
ALTER TABLE job_hosts DROP COLUMN packages_before, DROP COLUMN packages_after;

-- 2. Rollback specs per row: a rollback row's ``planned`` holds the versions to reinstall on
--    its own host ({package: version}), instead of every executor scanning one job-wide list
--    of {host_id, name, version}. Rollback jobs made before keep their list (still read when a
--    row has no plan); their rows get their own share of it here.
UPDATE job_hosts r SET planned = s.versions
    FROM (SELECT j.id AS job_id, (p ->> 'host_id')::bigint AS host_id,
                 jsonb_object_agg(p ->> 'name', p ->> 'version') AS versions
          FROM jobs j, jsonb_array_elements(j.packages) p
          WHERE j.kind = 'rollback' AND jsonb_typeof(p) = 'object' AND p ? 'host_id'
          GROUP BY 1, 2) s
    WHERE r.job_id = s.job_id AND r.host_id = s.host_id AND r.planned IS NULL;

-- 3. Changes the coordinator must hear about, whoever makes them (web: create, cancel, retry,
--    rollback; job runners; another process), sent in the changing transaction on channel
--    'pm_jobs': 'job:<job id>' when a job is created or its status changes (reload the job),
--    'row:<job id>:<row id>' when a row's state, permit or attempts change (reload that row);
--    a deleted row reloads its job (a removed host's rows are not deleted: since 0011 they
--    are cancelled by an UPDATE, heard as row changes). Identical
--    payloads within one transaction are delivered once (a job's 2,500 inserted rows: one).
CREATE FUNCTION pm_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pm_jobs', 'job:' || NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION pm_notify_job();
CREATE TRIGGER jobs_status_notify AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION pm_notify_job();

CREATE FUNCTION pm_notify_job_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN  -- a deleted row (a removed host's are cancelled, not deleted)
        PERFORM pg_notify('pm_jobs', 'job:' || OLD.job_id);
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('pm_jobs', 'job:' || NEW.job_id);
    ELSE
        PERFORM pg_notify('pm_jobs', 'row:' || NEW.job_id || ':' || NEW.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER job_hosts_insert_notify AFTER INSERT OR DELETE ON job_hosts
    FOR EACH ROW EXECUTE FUNCTION pm_notify_job_row();
CREATE TRIGGER job_hosts_state_notify AFTER UPDATE ON job_hosts
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state
                       OR OLD.run_until IS DISTINCT FROM NEW.run_until
                       OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION pm_notify_job_row();

-- Windows, their hosts (group membership) and blackouts: 'windows' (the coordinator reloads its
-- window set, which it no longer reads on every pass).
CREATE FUNCTION pm_notify_windows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pm_jobs', 'windows');
    RETURN NULL;
END $$;
CREATE TRIGGER maintenance_windows_notify AFTER INSERT OR UPDATE OR DELETE ON maintenance_windows
    FOR EACH STATEMENT EXECUTE FUNCTION pm_notify_windows();
CREATE TRIGGER blackouts_notify AFTER INSERT OR UPDATE OR DELETE ON blackouts
    FOR EACH STATEMENT EXECUTE FUNCTION pm_notify_windows();
CREATE TRIGGER host_groups_notify AFTER INSERT OR UPDATE OR DELETE ON host_groups
    FOR EACH STATEMENT EXECUTE FUNCTION pm_notify_windows();
