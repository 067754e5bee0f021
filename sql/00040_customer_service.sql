-- +goose Up
-- Customer-service sends. Outbound rows of messages carry what a link adds
-- (description, url), the API key that sent them (sent_by) and when the
-- platform accepted them (sent_at); status is sending → sent | failed |
-- unknown (no answer in time). Sending, sent and unknown messages use up
-- the reply window, counted per conversation since the user last wrote.
ALTER TABLE messages
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN url         text NOT NULL DEFAULT '',
    ADD COLUMN sent_by     text NOT NULL DEFAULT '',
    ADD COLUMN sent_at     timestamptz;
CREATE INDEX messages_outbound_window ON messages (app, openid, created_at)
    WHERE direction = 'out' AND status IN ('sending', 'sent', 'unknown');

-- When minigate received the user's latest message and session entry:
-- replies count against a window from then. The platform's times (kept in
-- last_user_message_at / session_entered_at, which the windows last from)
-- have whole seconds only, so they cannot order a reply and a message of
-- the same second.
ALTER TABLE conversations
    ADD COLUMN last_user_message_received_at timestamptz,
    ADD COLUMN session_entered_received_at   timestamptz;
UPDATE conversations
SET last_user_message_received_at = last_user_message_at, session_entered_received_at = session_entered_at;

-- Temporary media (images) by platform media id: uploaded through minigate
-- (origin upload, bytes stored at once) or sent by users (origin inbound,
-- bytes fetched from the platform on the first download and cached here).
-- Ids expire with the platform's (3 days); expired bytes are dropped, the
-- row stays so the id answers "expired".
CREATE TABLE media (
    app          text        NOT NULL,
    media_id     text        NOT NULL,
    origin       text        NOT NULL CHECK (origin IN ('upload', 'inbound')),
    content_type text        NOT NULL DEFAULT '',
    size         integer     NOT NULL DEFAULT 0,
    sha256       text        NOT NULL DEFAULT '',
    data         bytea,
    expires_at   timestamptz NOT NULL,
    fetched_at   timestamptz,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (app, media_id)
);
CREATE INDEX media_cached_expiry ON media (app, expires_at) WHERE data IS NOT NULL;

-- +goose Down
DROP TABLE media;
ALTER TABLE conversations
    DROP COLUMN last_user_message_received_at,
    DROP COLUMN session_entered_received_at;
DROP INDEX messages_outbound_window;
ALTER TABLE messages
    DROP COLUMN description,
    DROP COLUMN url,
    DROP COLUMN sent_by,
    DROP COLUMN sent_at;
