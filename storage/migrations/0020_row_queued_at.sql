-- The job page's per-row timings (issue 16 point 7): when each row was queued (created, or
-- queued again by a manual or automatic retry). Rows from before keep their job's creation time.
ALTER TABLE job_hosts ADD COLUMN queued_at timestamptz;
UPDATE job_hosts r SET queued_at = j.created_at FROM jobs j WHERE j.id = r.job_id;
ALTER TABLE job_hosts ALTER COLUMN queued_at SET DEFAULT now();
