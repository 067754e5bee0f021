package webhooks

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/config"
)

const defaultRejectedKept = config.DefaultRejectedCallbacksKept

// SQL for callbacks and rejected callbacks.
const (
	// CallbackInsertIfNew stores a callback unless one with the same
	// (app, kind, dedup_key) exists; it returns the new id, or no row
	// for a duplicate. A concurrent insert of the same key waits for the
	// first transaction and then returns no row.
	CallbackInsertIfNew = `
INSERT INTO callbacks (app, kind, dedup_key, event_type, summary, payload, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (app, kind, dedup_key) DO NOTHING
RETURNING id`

	// RejectedCallbackInsertAndPrune keeps a rejected callback and deletes
	// those more than $12 ids older, which bounds the table to $12 rows.
	RejectedCallbackInsertAndPrune = `
WITH ins AS (
    INSERT INTO rejected_callbacks (app, kind, method, reason, detail, query, headers, body, body_size, remote_addr, received_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    RETURNING id
)
DELETE FROM rejected_callbacks WHERE id <= (SELECT id FROM ins) - $12`

	// CallbackDeleteReceivedBefore deletes at most $2 callbacks received
	// before $1, oldest first.
	CallbackDeleteReceivedBefore = `
DELETE FROM callbacks WHERE id IN (
    SELECT id FROM callbacks WHERE received_at < $1 ORDER BY id LIMIT $2)`

	// RejectedCallbackList lists rejected callbacks newest first, with
	// optional app and kind filters and an id cursor.
	RejectedCallbackList = `
SELECT id, app, kind, method, reason, detail, query, headers, body_size, remote_addr, received_at
FROM rejected_callbacks
WHERE ($1 = '' OR app = $1) AND ($2 = '' OR kind = $2) AND ($3 = 0 OR id < $3)
ORDER BY id DESC
LIMIT $4`
)

type callbackRow struct {
	App, Kind, DedupKey, EventType string
	Summary, Payload               string
	ReceivedAt                     time.Time
}

// insertCallback stores row unless it is a duplicate; ok is false for a
// duplicate.
func insertCallback(ctx context.Context, tx *sqlx.Tx, row callbackRow) (id int64, ok bool, err error) {
	err = tx.QueryRowContext(ctx, CallbackInsertIfNew,
		row.App, row.Kind, row.DedupKey, row.EventType, row.Summary, row.Payload, row.ReceivedAt).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("webhooks: store callback: %w", err)
	}
	return id, true, nil
}

// jsonText encodes v for a json column. The text is passed as a string:
// lib/pq would send a []byte as bytea.
func jsonText(v any) (string, error) {
	if v == nil {
		return "{}", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("webhooks: encode payload: %w", err)
	}
	return string(b), nil
}

// RejectedCallback is a refused callback as kept for operators. The body
// itself is not exposed through the API (it may carry personal data); it
// stays in the table, truncated, for inspection in the database.
type RejectedCallback struct {
	ID         int64               `json:"id"`
	App        string              `json:"app"`
	Kind       string              `json:"kind"`
	Method     string              `json:"method"`
	Reason     string              `json:"reason"`
	Detail     string              `json:"detail"`
	Query      map[string][]string `json:"query"`
	Headers    map[string][]string `json:"headers"`
	BodySize   int                 `json:"body_size"`
	RemoteAddr string              `json:"remote_addr"`
	ReceivedAt time.Time           `json:"received_at"`
}

type rejected struct {
	RejectedCallback
	query, headers string
	body           []byte
}

// secretish matches query parameters and headers whose values are
// redacted before a rejected callback is kept: signatures (a valid
// WeChat/QQ signature with its timestamp and nonce would allow an offline
// guess at the token), tokens, keys and credentials.
var secretish = regexp.MustCompile(`(?i)sign|token|secret|key|auth|cookie|passw`)

// Redacted stands in for redacted values.
const Redacted = "[redacted]"

func redact(in map[string][]string) map[string][]string {
	out := make(map[string][]string, len(in))
	for k, vs := range in {
		if secretish.MatchString(k) {
			out[k] = []string{Redacted}
			continue
		}
		out[k] = vs
	}
	return out
}

func rejectedRow(app string, kind Kind, req Request, ve *VerifyError, now time.Time) rejected {
	q := redact(url.Values(req.Query))
	h := redact(http.Header(req.Header))
	qj, _ := json.Marshal(cleanValues(q)) // maps of strings always encode
	hj, _ := json.Marshal(cleanValues(h))
	body := req.Body
	if len(body) > rejectedBodyKept {
		body = body[:rejectedBodyKept]
	}
	if body == nil {
		body = []byte{} // a nil []byte would be NULL
	}
	at := req.ReceivedAt
	if at.IsZero() {
		at = now
	}
	return rejected{
		RejectedCallback: RejectedCallback{
			App: CleanText(app), Kind: string(kind), Method: CleanText(req.Method),
			Reason: string(ve.Reason), Detail: CleanText(ve.Detail),
			BodySize: len(req.Body), RemoteAddr: CleanText(req.RemoteAddr), ReceivedAt: at,
		},
		query: string(qj), headers: string(hj), body: body,
	}
}

// cleanValues makes keys and values storable in jsonb (no NUL, valid UTF-8).
func cleanValues(in map[string][]string) map[string][]string {
	out := make(map[string][]string, len(in))
	for k, vs := range in {
		cv := make([]string, len(vs))
		for i, v := range vs {
			cv[i] = CleanText(v)
		}
		out[CleanText(k)] = cv
	}
	return out
}

func insertRejected(ctx context.Context, db sqlx.ExecerContext, r rejected, keep int) error {
	_, err := db.ExecContext(ctx, RejectedCallbackInsertAndPrune,
		r.App, r.Kind, r.Method, r.Reason, r.Detail, r.query, r.headers, r.body, r.BodySize, r.RemoteAddr, r.ReceivedAt, keep)
	if err != nil {
		return fmt.Errorf("webhooks: keep rejected callback: %w", err)
	}
	return nil
}

// PruneCallbacks deletes at most batch callbacks received before before and
// returns how many it deleted. A platform retry of a pruned callback is
// accepted as new, so callbacks are kept well beyond the platforms' retry
// spans (config.MinKeepCallbacks).
func PruneCallbacks(ctx context.Context, db sqlx.ExecerContext, before time.Time, batch int) (int64, error) {
	res, err := db.ExecContext(ctx, CallbackDeleteReceivedBefore, before, batch)
	if err != nil {
		return 0, fmt.Errorf("webhooks: prune callbacks: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("webhooks: prune callbacks: %w", err)
	}
	return n, nil
}

// RejectedFilter selects rejected callbacks for ListRejected.
type RejectedFilter struct {
	App    string
	Kind   string
	Before int64 // cursor: only ids below this; 0 for the newest
	Limit  int
}

// ListRejected returns rejected callbacks, newest first.
func ListRejected(ctx context.Context, db sqlx.QueryerContext, f RejectedFilter) ([]RejectedCallback, error) {
	rows, err := db.QueryxContext(ctx, RejectedCallbackList, f.App, f.Kind, f.Before, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("webhooks: list rejected callbacks: %w", err)
	}
	defer rows.Close()
	out := []RejectedCallback{}
	for rows.Next() {
		var r RejectedCallback
		var q, h []byte
		if err := rows.Scan(&r.ID, &r.App, &r.Kind, &r.Method, &r.Reason, &r.Detail, &q, &h, &r.BodySize, &r.RemoteAddr, &r.ReceivedAt); err != nil {
			return nil, fmt.Errorf("webhooks: list rejected callbacks: %w", err)
		}
		if err := json.Unmarshal(q, &r.Query); err != nil {
			return nil, fmt.Errorf("webhooks: rejected callback %d query: %w", r.ID, err)
		}
		if err := json.Unmarshal(h, &r.Headers); err != nil {
			return nil, fmt.Errorf("webhooks: rejected callback %d headers: %w", r.ID, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhooks: list rejected callbacks: %w", err)
	}
	return out, nil
}
