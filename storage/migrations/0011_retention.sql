-- Retention (R-9.2, issue 13 point 3): history outlives its host until retention removes it,
-- and the daily pruning remembers its runs.

-- A removed host's name, address and groups at removal, so that the history it leaves behind
-- (patch episodes, health transitions, job rows and attempts, which keep its id) still names it
-- in reports and stays within the scope of the groups it was in. Deleted by retention once no
-- history refers to it any more. Ids are never reused (bigserial), so an id is either live (in
-- hosts) or removed (here), never both.
CREATE TABLE removed_hosts (
    id            bigint PRIMARY KEY,
    name          text NOT NULL,
    address       inet,
    port          integer NOT NULL,
    display_name  text NOT NULL DEFAULT '',
    group_ids     bigint[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    removed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX removed_hosts_removed_idx ON removed_hosts (removed_at);

-- Every host, live or removed: what history queries join to name a host.
CREATE VIEW known_hosts AS
    SELECT id, name, address, port, display_name, false AS removed FROM hosts
    UNION ALL
    SELECT id, name, address, port, display_name, true AS removed FROM removed_hosts;

-- History no longer cascades away with its host (it did: a host delete erased its patch and
-- job history). Live state (packages, group memberships, windows, waivers) still does.
ALTER TABLE host_health_history DROP CONSTRAINT host_health_history_host_id_fkey;
ALTER TABLE host_patches DROP CONSTRAINT host_patches_host_id_fkey;
ALTER TABLE job_hosts DROP CONSTRAINT job_hosts_host_id_fkey;
ALTER TABLE job_host_attempts DROP CONSTRAINT job_host_attempts_host_id_fkey;

-- New history still needs a live host, as the foreign keys demanded (a late write of a host
-- removed meanwhile is refused, not kept as an orphan). FOR KEY SHARE, as a foreign key check
-- does: a concurrent delete waits for the writer, whose rows its trigger then sees.
CREATE FUNCTION require_live_host() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM hosts WHERE id = NEW.host_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insert on table "%" violates the live-host rule: host % is not registered',
            TG_TABLE_NAME, NEW.host_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER host_health_history_live_host BEFORE INSERT OR UPDATE OF host_id
    ON host_health_history FOR EACH ROW EXECUTE FUNCTION require_live_host();
CREATE TRIGGER host_patches_live_host BEFORE INSERT OR UPDATE OF host_id
    ON host_patches FOR EACH ROW EXECUTE FUNCTION require_live_host();
CREATE TRIGGER job_hosts_live_host BEFORE INSERT OR UPDATE OF host_id
    ON job_hosts FOR EACH ROW EXECUTE FUNCTION require_live_host();
CREATE TRIGGER job_host_attempts_live_host BEFORE INSERT OR UPDATE OF host_id
    ON job_host_attempts FOR EACH ROW EXECUTE FUNCTION require_live_host();

-- Retention deletes old jobs; a newer rollback of a pruned job keeps its own history.
ALTER TABLE jobs DROP CONSTRAINT jobs_rollback_of_fkey;
ALTER TABLE jobs ADD CONSTRAINT jobs_rollback_of_fkey
    FOREIGN KEY (rollback_of) REFERENCES jobs (id) ON DELETE SET NULL;

-- Indexes for the pruning's range scans, and for the foreign keys a deleted job is checked
-- against (without them each deleted job scanned jobs and window_runs: 2.6 s per 1,000 jobs).
CREATE INDEX jobs_rollback_of_idx ON jobs (rollback_of) WHERE rollback_of IS NOT NULL;
CREATE INDEX window_runs_job_idx ON window_runs (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX host_health_history_at_idx ON host_health_history (at);
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX discovery_scans_started_idx ON discovery_scans (started_at);
CREATE INDEX window_changes_at_idx ON window_changes (at);

-- Whatever path deletes a host (API, CLI, psql): remember it, drop its live state that has no
-- foreign key any more (open patch episodes are its current pending list, not history) and end
-- its unfinished job rows (no actor will ever run them).
CREATE FUNCTION remember_removed_host() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO removed_hosts (id, name, address, port, display_name, group_ids, created_at)
    VALUES (OLD.id, OLD.name, OLD.address, OLD.port, OLD.display_name,
            ARRAY(SELECT group_id FROM host_groups WHERE host_id = OLD.id ORDER BY group_id),
            OLD.created_at)
    ON CONFLICT (id) DO NOTHING;
    DELETE FROM host_patches WHERE host_id = OLD.id AND resolved_at IS NULL;
    UPDATE job_hosts SET state = 'cancelled', finished_at = now(), run_until = NULL,
           owner = NULL, lease_expires_at = NULL, error_code = 'HOST_REMOVED',
           error_message = 'the host was removed', updated_at = now()
     WHERE host_id = OLD.id
       AND state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped');
    RETURN OLD;
END $$;
CREATE TRIGGER hosts_remember_removed BEFORE DELETE ON hosts
    FOR EACH ROW EXECUTE FUNCTION remember_removed_host();

-- One row per pruning run: the last finished run decides when the next is due (also across
-- restarts), and what each table lost is kept for the operator.
CREATE TABLE retention_runs (
    id           bigserial PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    operational_cutoff timestamptz NOT NULL,
    audit_cutoff timestamptz NOT NULL,
    deleted      jsonb NOT NULL DEFAULT '{}',
    error        text NOT NULL DEFAULT ''
);
CREATE INDEX retention_runs_finished_idx ON retention_runs (finished_at DESC);
