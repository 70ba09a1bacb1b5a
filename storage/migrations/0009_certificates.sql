-- Agent enrolment requests (agent-api §7.1; issue 14). The polling token is kept as its SHA-256
-- only. The agent's private key is never stored: it is generated when the approved agent polls
-- and handed over in that one answer (the request is 'delivered' from then on).

CREATE TABLE enrolments (
    id              bigserial PRIMARY KEY,
    token_sha256    text NOT NULL UNIQUE,
    machine_id      text NOT NULL,
    fqdn            text NOT NULL,
    ip_address      inet NOT NULL,
    hostname        text NOT NULL DEFAULT '',
    os_details      jsonb NOT NULL DEFAULT '{}',
    source_address  text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'denied', 'delivered', 'superseded')),
    group_name      text,
    decided_by      text,
    decided_at      timestamptz,
    host_id         bigint REFERENCES hosts (id) ON DELETE SET NULL,
    cert_serial     numeric(50, 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX enrolments_machine_idx ON enrolments (machine_id, status);
