-- +goose Up
-- The retention job deletes callbacks by receipt time (retention.callbacks)
-- and finished events by creation time (retention.events).
CREATE INDEX callbacks_received_at_idx ON callbacks (received_at);
CREATE INDEX events_finished_created_at_idx ON events (created_at) WHERE state <> 'pending';

-- +goose Down
DROP INDEX events_finished_created_at_idx;
DROP INDEX callbacks_received_at_idx;
