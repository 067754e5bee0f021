-- +goose Up
-- Users, their platform identities and their session tokens.

-- A user is one person as minigate knows them; identities link platform
-- accounts (an openid in one app) to a user.
CREATE TABLE users (
    id                 text PRIMARY KEY,           -- usr_… (internal/ids)
    phone_number       text,                       -- verified via getPhoneNumber
    pure_phone_number  text,
    phone_country_code text,
    phone_verified_at  timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

-- One row per (app, openid). The unionid is stored whenever the platform
-- returns it, together with the app's union scope at that time; logins with
-- prefer_unionid match other users by (union_scope, unionid).
CREATE TABLE identities (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app                    text NOT NULL,
    platform               text NOT NULL,
    openid                 text NOT NULL,
    unionid                text,
    union_scope            text,
    alipay_user_id         text,
    user_id                text NOT NULL REFERENCES users (id),
    -- The latest session_key, sealed with AES-256-GCM (see sessions/crypto.go);
    -- NULL for platforms without one (Alipay).
    session_key_sealed     bytea,
    session_key_updated_at timestamptz,
    created_at             timestamptz NOT NULL,
    last_login_at          timestamptz NOT NULL,
    CONSTRAINT identities_app_openid_key UNIQUE (app, openid)
);

-- Unionid matching within a scope; not unique, because logins without
-- prefer_unionid keep separate users that share a unionid.
CREATE INDEX identities_scope_unionid_idx ON identities (union_scope, unionid, created_at)
    WHERE unionid IS NOT NULL AND union_scope IS NOT NULL;
CREATE INDEX identities_user_id_idx ON identities (user_id);

-- Session tokens are stored only as SHA-256 hashes of their 256 random bits.
CREATE TABLE sessions (
    id          text PRIMARY KEY,                  -- ses_… (internal/ids)
    token_hash  bytea NOT NULL,
    user_id     text NOT NULL REFERENCES users (id),
    identity_id bigint NOT NULL REFERENCES identities (id),
    app         text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CONSTRAINT sessions_token_hash_key UNIQUE (token_hash)
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- +goose Down
DROP TABLE sessions;
DROP TABLE identities;
DROP TABLE users;
