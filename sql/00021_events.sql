-- +goose Up
-- minigate's own events to the business backend. state: pending (queued or
-- being retried), delivered, failed (retries exhausted), not_configured (no
-- events.url when published: recorded, not sent). data is `json` so that
-- message text is stored exactly as received.
CREATE TABLE events (
    id              text        PRIMARY KEY,
    type            text        NOT NULL,
    data            json        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'not_configured')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    last_error      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL
);
CREATE INDEX events_type_id ON events (type, id DESC);
CREATE INDEX events_state_id ON events (state, id DESC);

-- One row per delivery attempt: the HTTP status (0 when there was no
-- response), how long it took and what went wrong.
CREATE TABLE event_deliveries (
    id           bigserial   PRIMARY KEY,
    event_id     text        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    job_id       bigint      NOT NULL,
    attempt      integer     NOT NULL,
    status       integer     NOT NULL,
    duration_ms  integer     NOT NULL,
    error        text        NOT NULL,
    attempted_at timestamptz NOT NULL
);
CREATE INDEX event_deliveries_event ON event_deliveries (event_id, id);

-- +goose Down
DROP TABLE event_deliveries;
DROP TABLE events;
