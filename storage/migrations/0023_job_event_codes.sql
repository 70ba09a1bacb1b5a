-- A finished job's notification event names each host by its display name and carries each
-- row's error code, so a subscriber who sees only some hosts can judge the job by its own
-- roll-up rule (rows that had nothing to do, NOTHING_PENDING, count neither way).
CREATE OR REPLACE FUNCTION notification_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    enabled_now boolean;
BEGIN
    SELECT enabled INTO enabled_now FROM notification_settings WHERE id = 1;
    IF NOT coalesce(enabled_now, false) THEN
        RETURN NEW;
    END IF;
    INSERT INTO notification_events (kind, dedupe_key, host_ids, details)
    SELECT CASE WHEN NEW.status IN ('failed', 'partially_failed') THEN 'job_failed'
                ELSE 'job_finished' END,
           'job:' || NEW.id || ':' || extract(epoch FROM NEW.finished_at)::text,
           coalesce(array_agg(jh.host_id ORDER BY jh.host_id), '{}'),
           jsonb_build_object(
               'job_id', NEW.id, 'status', NEW.status,
               'hosts', coalesce(jsonb_agg(jsonb_build_object(
                   'id', jh.host_id,
                   'name', coalesce(nullif(h.display_name, ''), h.name, '#' || jh.host_id),
                   'state', jh.state, 'code', jh.error_code, 'error', jh.error_message)
                   ORDER BY jh.host_id), '[]'))
    FROM job_hosts jh LEFT JOIN hosts h ON h.id = jh.host_id
    WHERE jh.job_id = NEW.id
    ON CONFLICT (dedupe_key) DO NOTHING;
    RETURN NEW;
END $$;
