-- +goose Up
-- The retention job deletes session tokens that expired or were revoked
-- long enough ago (retention.sessions).
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- +goose Down
DROP INDEX sessions_revoked_at_idx;
DROP INDEX sessions_expires_at_idx;
