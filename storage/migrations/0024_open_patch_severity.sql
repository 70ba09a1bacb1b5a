-- Open patches by severity (storage.inventory.fleet_counts: the dashboard and
-- /api/v1/fleet/summary on every load; the reports' pending_by_severity): an index-only scan of
-- the open rows instead of reading every patch row, open and resolved. 10,000 realistic hosts
-- (204,737 open of 504,737 rows), vacuumed: 38.7 ms -> 14.0 ms.
CREATE INDEX host_patches_open_severity_idx ON host_patches (severity, host_id)
    WHERE resolved_at IS NULL;
