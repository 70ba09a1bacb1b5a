-- Deployment plans (issue 16 point 2): the plan a job was created from (what the Deploy page
-- previewed), each host row's planned changes ({package: version to install}), and the drift
-- the host actor found when it re-checked the host's pending list before sending.
ALTER TABLE jobs ADD COLUMN plan jsonb;
ALTER TABLE job_hosts
    ADD COLUMN planned jsonb,
    ADD COLUMN drift   text NOT NULL DEFAULT '';
