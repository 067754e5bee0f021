package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

const eventColumns = `id, type, created_at, data, state, attempts, last_attempt_at, delivered_at, last_error`

// SQL for events and their deliveries.
const (
	// EventInsert records a new event.
	EventInsert = `
INSERT INTO events (id, type, data, state, created_at) VALUES ($1, $2, $3, $4, $5)`

	// EventGet reads one event.
	EventGet = `SELECT ` + eventColumns + ` FROM events WHERE id = $1`

	// EventList lists events newest first, filtered by type and state
	// (empty: any) below an id cursor (empty: from the newest).
	EventList = `
SELECT ` + eventColumns + ` FROM events
WHERE ($1 = '' OR type = $1) AND ($2 = '' OR state = $2) AND ($3 = '' OR id < $3)
ORDER BY id DESC
LIMIT $4`

	// EventSetPending marks an event pending again (redelivery).
	EventSetPending = `
UPDATE events SET state = 'pending' WHERE id = $1 RETURNING ` + eventColumns

	// EventMarkDelivered records a successful attempt.
	EventMarkDelivered = `
UPDATE events
SET state = 'delivered', attempts = attempts + 1, last_attempt_at = $2, delivered_at = $2, last_error = ''
WHERE id = $1`

	// EventMarkAttemptFailed records a failed attempt; when $4 (it was the
	// last attempt) a pending event becomes failed. An event delivered by
	// another job stays delivered.
	EventMarkAttemptFailed = `
UPDATE events
SET attempts = attempts + 1, last_attempt_at = $2, last_error = $3,
    state = CASE WHEN $4 AND state = 'pending' THEN 'failed' ELSE state END
WHERE id = $1`

	// EventMarkNotConfigured records that a queued event was not sent
	// because events.url has been removed since it was published.
	EventMarkNotConfigured = `
UPDATE events SET state = 'not_configured' WHERE id = $1 AND state = 'pending'`

	// EventDeliveryInsert records one attempt.
	EventDeliveryInsert = `
INSERT INTO event_deliveries (event_id, job_id, attempt, status, duration_ms, error, attempted_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

	// EventDeleteFinishedBefore deletes at most $2 events created before
	// $1 that are no longer pending (their attempts go with them).
	EventDeleteFinishedBefore = `
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE created_at < $1 AND state <> 'pending' ORDER BY id LIMIT $2)`

	// EventDeliveryList lists an event's attempts, oldest first.
	EventDeliveryList = `
SELECT id, job_id, attempt, status, duration_ms, error, attempted_at
FROM event_deliveries WHERE event_id = $1 ORDER BY id`
)

func scanEvent(row interface{ Scan(...any) error }) (Event, error) {
	var ev Event
	var data []byte // scanning into *[]byte copies the driver's buffer
	err := row.Scan(&ev.ID, &ev.Type, &ev.CreatedAt, &data, &ev.State, &ev.Attempts, &ev.LastAttemptAt, &ev.DeliveredAt, &ev.LastError)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Event{}, ErrNotFound
	case err != nil:
		return Event{}, fmt.Errorf("events: read event: %w", err)
	}
	ev.Data = data
	ev.CreatedAt = ev.CreatedAt.UTC()
	return ev, nil
}

func getEvent(ctx context.Context, db sqlx.QueryerContext, id string) (Event, error) {
	return scanEvent(db.QueryRowxContext(ctx, EventGet, id))
}

func listEvents(ctx context.Context, db sqlx.QueryerContext, p ListParams) ([]Event, error) {
	rows, err := db.QueryxContext(ctx, EventList, p.Type, string(p.State), p.Before, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("events: list: %w", err)
	}
	defer rows.Close()
	out := []Event{}
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events: list: %w", err)
	}
	return out, nil
}

func listDeliveries(ctx context.Context, db sqlx.QueryerContext, id string) ([]Delivery, error) {
	out := []Delivery{}
	if err := sqlx.SelectContext(ctx, db, &out, EventDeliveryList, id); err != nil {
		return nil, fmt.Errorf("events: list deliveries: %w", err)
	}
	return out, nil
}

// Prune deletes at most batch events created before before that are
// delivered, failed or not_configured, with their delivery attempts, and
// returns how many it deleted. Pending events are kept whatever their age.
func Prune(ctx context.Context, db sqlx.ExecerContext, before time.Time, batch int) (int64, error) {
	res, err := db.ExecContext(ctx, EventDeleteFinishedBefore, before, batch)
	if err != nil {
		return 0, fmt.Errorf("events: prune: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("events: prune: %w", err)
	}
	return n, nil
}

// attempt is one delivery attempt's outcome, as recorded.
type attempt struct {
	eventID    string
	jobID      int64
	number     int
	status     int
	duration   time.Duration
	err        string
	at         time.Time
	delivered  bool
	lastChance bool
}

// recordAttempt stores the attempt and the event's new state together.
//
// The transaction commits asynchronously (synchronous_commit off): it does
// not wait for its WAL flush, so deliveries do not queue behind the
// callbacks' commits for the disk. This is safe because the job that made
// the attempt is completed by a later, synchronous commit, and Postgres
// flushes WAL in order: when that completion is durable, so is this
// record. A crash that loses both only makes River run the job again, one
// more delivery that receivers de-duplicate by webhook-id.
func recordAttempt(ctx context.Context, db *sqlx.DB, a attempt) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("events: record attempt: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
		return fmt.Errorf("events: record attempt: %w", err)
	}
	if _, err := tx.ExecContext(ctx, EventDeliveryInsert, a.eventID, a.jobID, a.number, a.status, a.duration.Milliseconds(), a.err, a.at); err != nil {
		return fmt.Errorf("events: record attempt: %w", err)
	}
	if a.delivered {
		_, err = tx.ExecContext(ctx, EventMarkDelivered, a.eventID, a.at)
	} else {
		_, err = tx.ExecContext(ctx, EventMarkAttemptFailed, a.eventID, a.at, a.err, a.lastChance)
	}
	if err != nil {
		return fmt.Errorf("events: record attempt: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("events: record attempt: %w", err)
	}
	return nil
}
