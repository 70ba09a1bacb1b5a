-- Review fixes (F13b).

-- Risk waivers are history too (the evidence pack lists active and expired ones): they no
-- longer cascade away with their host; retention deletes them once expired or revoked before
-- the operational cutoff (then the removed host's record may go). A new waiver still needs a
-- live host.
ALTER TABLE risk_waivers DROP CONSTRAINT risk_waivers_host_id_fkey;
CREATE TRIGGER risk_waivers_live_host BEFORE INSERT OR UPDATE OF host_id
    ON risk_waivers FOR EACH ROW EXECUTE FUNCTION require_live_host();
CREATE INDEX risk_waivers_ended_idx ON risk_waivers ((coalesce(revoked_at, expires_at)));
CREATE INDEX risk_waivers_host_all_idx ON risk_waivers (host_id);

-- What the periodic checks have told (a host unreachable, a certificate expiring, a window
-- starting), one row per episode, apart from the events: retention and the outbox bound delete
-- dispatched events, which must not make an ongoing episode be told again. A row goes when its
-- episode ends (the host answers again, the certificate expires or is revoked, the occurrence
-- starts). Seeded with the keys of the events still there.
CREATE TABLE notification_told (
    dedupe_key  text PRIMARY KEY,
    told_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO notification_told (dedupe_key, told_at)
    SELECT dedupe_key, created_at FROM notification_events WHERE dedupe_key IS NOT NULL
    ON CONFLICT DO NOTHING;
