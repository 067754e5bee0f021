-- +goose Up
-- Access tokens are sealed at rest like session keys (internal/seal:
-- AES-256-GCM under a key derived from secret_key, purpose
-- "minigate access_token v1", the app id as associated data). Tokens stored
-- in plaintext before are dropped, not converted: each app fetches a new
-- one on first use (WeChat's stable token hands back the current one).
ALTER TABLE access_tokens DROP COLUMN token;
ALTER TABLE access_tokens ADD COLUMN token_sealed bytea;  -- NULL until the first fetch
UPDATE access_tokens SET expires_at = NULL;

-- +goose Down
ALTER TABLE access_tokens DROP COLUMN token_sealed;
ALTER TABLE access_tokens ADD COLUMN token text;
