-- Review F13a H1: the audit chain is bound to its key. key_check is HMAC-SHA256(key, a
-- constant): an append with another key is refused, and verify says "wrong key" instead of
-- calling every entry edited. NULL on a head written before this migration: the next append
-- (with the key in use) fills it.
ALTER TABLE audit_head ADD COLUMN key_check text;
