-- Issue 16: the natural sort key of host names, stored (it was computed per row in ORDER BY).

-- Every run of digits compares as a number of any length: its digits without leading zeros,
-- prefixed by their count (3 places), so a longer number sorts after a shorter one and two long
-- numbers never compare equal (lpad(…, 20) cut runs longer than 20 digits). The rest compares as
-- lower-case text. "web2" < "web10", "10.0.0.2" < "10.0.0.10".
CREATE OR REPLACE FUNCTION natural_key(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (
        SELECT coalesce(string_agg(
                   CASE WHEN part[1] ~ '^[0-9]'
                        THEN lpad(length(ltrim(part[1], '0'))::text, 3, '0') || ltrim(part[1], '0')
                        ELSE lower(part[1]) END,
                   '' ORDER BY n), '')
        FROM regexp_matches(value, '([0-9]+|[^0-9]+)', 'g') WITH ORDINALITY AS m(part, n)
    );

-- The host list's "Host" order: the shown name (display name, or name) naturally, then the
-- address (inet orders numerically), then the id.
ALTER TABLE hosts ADD COLUMN name_key text NOT NULL
    GENERATED ALWAYS AS (natural_key(coalesce(nullif(display_name, ''), name))) STORED;
CREATE INDEX hosts_name_key_idx ON hosts (name_key, address, id);
