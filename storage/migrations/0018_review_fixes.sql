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
