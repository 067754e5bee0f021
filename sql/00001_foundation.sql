-- +goose Up
-- The foundation: a row per running instance is not needed; this first step
-- only enables the extensions later steps rely on.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- +goose Down
DROP EXTENSION IF EXISTS pgcrypto;
