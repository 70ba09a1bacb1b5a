-- Issue 16 (display): the user's time zone, and a natural sort key for host names.

-- An IANA zone name; the web checks it against the zones it knows before storing it.
ALTER TABLE users ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC'
    CHECK (time_zone ~ '^[A-Za-z0-9_+/-]{1,64}$');

-- "web2" before "web10", "10.0.0.2" before "10.0.0.10": every run of digits is compared as a
-- number (zero-padded to 20 places), the rest as text, case-insensitively.
CREATE FUNCTION natural_key(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (
        SELECT coalesce(string_agg(CASE WHEN part[1] ~ '^[0-9]'
                                        THEN lpad(part[1], 20, '0') ELSE lower(part[1]) END,
                                   '' ORDER BY n), '')
        FROM regexp_matches(value, '([0-9]+|[^0-9]+)', 'g') WITH ORDINALITY AS m(part, n)
    );
