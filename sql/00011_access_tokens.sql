-- +goose Up
-- Platform access tokens (WeChat stable token, QQ getToken), one row per
-- app, shared by every instance. The row is locked (SELECT … FOR UPDATE)
-- while one instance refreshes the token, so refreshes never overlap.
CREATE TABLE access_tokens (
    app         text PRIMARY KEY,
    token       text,                              -- NULL until the first fetch
    expires_at  timestamptz,
    fetch_count bigint NOT NULL DEFAULT 0,         -- fetches at the platform, for operators
    updated_at  timestamptz NOT NULL
);

-- +goose Down
DROP TABLE access_tokens;
