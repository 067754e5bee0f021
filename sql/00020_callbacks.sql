-- +goose Up
-- Verified platform callbacks (message pushes, payment notifications), one
-- row per callback however often the platform delivers it: the unique
-- (app, kind, dedup_key) index is the de-duplication, and it holds across
-- instances. payload is the trusted, decrypted payload; it is `json`, not
-- `jsonb`, so that any text a platform sends (even \u0000) is stored as is.
CREATE TABLE callbacks (
    id          bigserial   PRIMARY KEY,
    app         text        NOT NULL,
    kind        text        NOT NULL,
    dedup_key   text        NOT NULL,
    event_type  text        NOT NULL,
    summary     json        NOT NULL,
    payload     json        NOT NULL,
    received_at timestamptz NOT NULL,
    CONSTRAINT callbacks_dedup UNIQUE (app, kind, dedup_key)
);
CREATE INDEX callbacks_app_kind_received ON callbacks (app, kind, received_at DESC);

-- Callbacks that failed verification, kept for operators (an attack, a
-- misconfigured key). Bounded: every insert deletes rows older than the
-- newest limits.rejected_callbacks_kept. Signature-like query parameters and
-- headers are redacted; the body is truncated.
CREATE TABLE rejected_callbacks (
    id          bigserial   PRIMARY KEY,
    app         text        NOT NULL,
    kind        text        NOT NULL,
    method      text        NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    query       jsonb       NOT NULL,
    headers     jsonb       NOT NULL,
    body        bytea       NOT NULL,
    body_size   integer     NOT NULL,
    remote_addr text        NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX rejected_callbacks_app_received ON rejected_callbacks (app, received_at DESC);

-- +goose Down
DROP TABLE rejected_callbacks;
DROP TABLE callbacks;
