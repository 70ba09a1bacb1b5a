-- Notifications (R-9.3): SMTP settings, per-user subscriptions and a bounded outbox.
--
-- notification_events is the outbox of things that happened (a job finished, a host has been
-- unreachable for a while, a certificate expires soon, a window starts soon). An event is a
-- cheap insert: a job's final state inserts its event from a trigger, in the same transaction
-- as the state. The sender fans events out to subscribers (scoped by their groups) as one
-- digest message per recipient in notification_messages, which it sends, retries and marks.
-- Both tables are bounded: past notification_settings.max_events / max_messages the oldest are
-- dropped and counted in notification_settings.dropped_*.

CREATE TABLE notification_settings (
    id               smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    enabled          boolean NOT NULL DEFAULT false,
    smtp_host        text NOT NULL DEFAULT '',
    smtp_port        integer NOT NULL DEFAULT 587 CHECK (smtp_port BETWEEN 1 AND 65535),
    security         text NOT NULL DEFAULT 'starttls' CHECK (security IN ('starttls', 'tls', 'none')),
    username         text NOT NULL DEFAULT '',
    password_sealed  text NOT NULL DEFAULT '',
    password_env     text NOT NULL DEFAULT '',
    from_address     text NOT NULL DEFAULT '',
    timeout_s        integer NOT NULL DEFAULT 20 CHECK (timeout_s BETWEEN 1 AND 300),
    unreachable_minutes integer NOT NULL DEFAULT 30 CHECK (unreachable_minutes BETWEEN 1 AND 10080),
    certificate_days integer NOT NULL DEFAULT 14 CHECK (certificate_days BETWEEN 1 AND 365),
    reminder_minutes integer NOT NULL DEFAULT 60 CHECK (reminder_minutes BETWEEN 1 AND 10080),
    max_events       integer NOT NULL DEFAULT 10000,
    max_messages     integer NOT NULL DEFAULT 10000,
    dropped_events   bigint NOT NULL DEFAULT 0,
    dropped_messages bigint NOT NULL DEFAULT 0,
    last_error       text NOT NULL DEFAULT '',
    last_error_at    timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO notification_settings (id) VALUES (1);

CREATE TABLE notification_subscriptions (
    user_id  bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    email    text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    events   text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE notification_events (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('job_finished', 'job_failed', 'host_unreachable',
                                              'certificate_expiry', 'window_reminder', 'test')),
    dedupe_key  text UNIQUE,               -- periodic checks insert each episode once
    host_ids    bigint[] NOT NULL DEFAULT '{}',  -- empty: about no host (admins only)
    details     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz
);
CREATE INDEX notification_events_pending_idx ON notification_events (id) WHERE dispatched_at IS NULL;

CREATE TABLE notification_messages (
    id          bigserial PRIMARY KEY,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    events      integer NOT NULL DEFAULT 1,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX notification_messages_due_idx ON notification_messages (next_attempt_at)
    WHERE state = 'pending';

-- A job reaching its end (finished_at set) enqueues its event in the same transaction.
CREATE FUNCTION notification_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    enabled_now boolean;
BEGIN
    SELECT enabled INTO enabled_now FROM notification_settings WHERE id = 1;
    IF NOT coalesce(enabled_now, false) THEN
        RETURN NEW;
    END IF;
    INSERT INTO notification_events (kind, dedupe_key, host_ids, details)
    SELECT CASE WHEN NEW.status IN ('failed', 'partially_failed') THEN 'job_failed'
                ELSE 'job_finished' END,
           'job:' || NEW.id || ':' || extract(epoch FROM NEW.finished_at)::text,
           coalesce(array_agg(jh.host_id ORDER BY jh.host_id), '{}'),
           jsonb_build_object(
               'job_id', NEW.id, 'status', NEW.status,
               'hosts', coalesce(jsonb_agg(jsonb_build_object(
                   'id', jh.host_id, 'name', coalesce(h.name, '#' || jh.host_id),
                   'state', jh.state, 'error', jh.error_message) ORDER BY jh.host_id), '[]'))
    FROM job_hosts jh LEFT JOIN hosts h ON h.id = jh.host_id
    WHERE jh.job_id = NEW.id
    ON CONFLICT (dedupe_key) DO NOTHING;
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_notify_finished AFTER UPDATE OF finished_at ON jobs
    FOR EACH ROW WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
    EXECUTE FUNCTION notification_job_finished();
