-- Every certificate the internal CA issued (R-8.1). Private keys are never stored here.

CREATE TABLE certificates (
    serial      numeric(50, 0) PRIMARY KEY,   -- X.509 serials are up to 159 bits
    kind        text NOT NULL CHECK (kind IN ('root', 'manager_client', 'web_server', 'agent_server')),
    subject     text NOT NULL,
    sans        text[] NOT NULL DEFAULT '{}',
    not_before  timestamptz NOT NULL,
    not_after   timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at  timestamptz,
    host_id     bigint REFERENCES hosts (id) ON DELETE SET NULL,
    cert_pem    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX certificates_status_idx ON certificates (status);
