-- +goose Up
-- The customer-service inbox. One conversation per (app, openid), with what
-- the reply windows are computed from: when the user last wrote, when they
-- last entered the customer-service session, and how many of their messages
-- are unanswered. last_activity_at orders the inbox (newest first).
CREATE TABLE conversations (
    app                  text        NOT NULL,
    openid               text        NOT NULL,
    last_message_id      text,
    last_message_type    text,
    last_message_preview text,
    last_direction       text,
    last_message_at      timestamptz,
    last_user_message_at timestamptz,
    session_entered_at   timestamptz,
    unanswered           integer     NOT NULL DEFAULT 0,
    last_activity_at     timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,
    PRIMARY KEY (app, openid)
);
CREATE INDEX conversations_app_activity ON conversations (app, last_activity_at DESC, openid);

-- Both directions of a conversation. Inbound rows come from verified
-- message pushes (callback_id); outbound rows (customer-service sends) carry
-- their outcome in status / error_code / error_message. created_at is the
-- platform's message time for inbound messages. fields keeps every field of
-- an inbound push as parsed, so unknown types and events are kept as they came.
CREATE TABLE messages (
    id              text        PRIMARY KEY,
    app             text        NOT NULL,
    openid          text        NOT NULL,
    direction       text        NOT NULL CHECK (direction IN ('in', 'out')),
    type            text        NOT NULL,
    event           text        NOT NULL DEFAULT '',
    content         text        NOT NULL DEFAULT '',
    media_id        text        NOT NULL DEFAULT '',
    pic_url         text        NOT NULL DEFAULT '',
    title           text        NOT NULL DEFAULT '',
    page_path       text        NOT NULL DEFAULT '',
    mp_app_id       text        NOT NULL DEFAULT '',
    thumb_url       text        NOT NULL DEFAULT '',
    thumb_media_id  text        NOT NULL DEFAULT '',
    session_from    text        NOT NULL DEFAULT '',
    fields          json,
    platform_msg_id text        NOT NULL DEFAULT '',
    callback_id     bigint,
    status          text        NOT NULL DEFAULT 'received',
    error_code      text        NOT NULL DEFAULT '',
    error_message   text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    received_at     timestamptz NOT NULL
);
CREATE INDEX messages_conversation ON messages (app, openid, created_at, id);

-- +goose Down
DROP TABLE messages;
DROP TABLE conversations;
