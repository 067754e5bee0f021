// Package events records minigate's own events (message.received,
// order.paid, …) and delivers them to the business backend: a POST of
// {"id","type","created_at","data"} to events.url, signed the Standard
// Webhooks way (see Signer), by a River job inserted in the same
// transaction as the state change the event reports, retried with
// exponential backoff for more than 24 hours (DefaultBackoff). Every
// attempt is recorded in event_deliveries; an event's state is pending,
// delivered, failed (retries exhausted) or not_configured (no events.url
// when it was published: recorded, never sent unless redelivered later).
//
// Publishing, from a domain package's transaction:
//
//	ev, err := svc.Publish(ctx, tx, events.TypeOrderPaid, data)
//
// Delivery is at least once: receivers de-duplicate on webhook-id, which
// is the event id on every attempt.
package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/ids"
)

// The event types of the contract.
const (
	TypeMessageReceived = "message.received"
	TypeOrderPaid       = "order.paid"
	TypeOrderClosed     = "order.closed"
	TypeOrderFailed     = "order.failed"
	TypeRefundSucceeded = "refund.succeeded"
	TypeRefundFailed    = "refund.failed"
)

// State is an event's delivery state.
type State string

// Delivery states.
const (
	// StatePending: queued, being sent or waiting for a retry.
	StatePending State = "pending"
	// StateDelivered: the backend answered 2xx.
	StateDelivered State = "delivered"
	// StateFailed: every attempt failed; POST …/redeliver to try again.
	StateFailed State = "failed"
	// StateNotConfigured: no events.url when the event was published.
	StateNotConfigured State = "not_configured"
)

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateDelivered, StateFailed, StateNotConfigured:
		return true
	}
	return false
}

// DefaultTimeout bounds one delivery attempt.
const DefaultTimeout = 15 * time.Second

// Queue is the River queue delivery jobs run in: their own, so that a slow
// or failing backend cannot hold the workers that sweeps and other jobs
// need (the River client must work it; internal/app configures it).
const Queue = "events"

// Errors.
var (
	// ErrNotFound is returned for an unknown event id.
	ErrNotFound = apperr.New(apperr.NotFound, "event_not_found", "no such event")
	// ErrNotConfigured is returned by Redeliver when no events.url is set.
	ErrNotConfigured = apperr.New(apperr.Conflict, "events_not_configured", "no events URL is configured; events are recorded but not sent")
)

// Event is a recorded event with its delivery state.
type Event struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	CreatedAt     time.Time       `json:"created_at"`
	Data          json.RawMessage `json:"data"`
	State         State           `json:"state"`
	Attempts      int             `json:"attempts"`
	LastAttemptAt *time.Time      `json:"last_attempt_at,omitempty"`
	DeliveredAt   *time.Time      `json:"delivered_at,omitempty"`
	LastError     string          `json:"last_error,omitempty"`
}

// Delivery is one recorded delivery attempt.
type Delivery struct {
	ID          int64     `json:"id" db:"id"`
	JobID       int64     `json:"job_id" db:"job_id"`
	Attempt     int       `json:"attempt" db:"attempt"`
	Status      int       `json:"status" db:"status"` // HTTP status; 0 when there was no response
	DurationMS  int       `json:"duration_ms" db:"duration_ms"`
	Error       string    `json:"error,omitempty" db:"error"`
	AttemptedAt time.Time `json:"attempted_at" db:"attempted_at"`
}

// Options configures a Service.
type Options struct {
	// URL receives the events; empty records them without sending.
	URL string
	// Secret signs deliveries (see Signer); required with URL. Never logged.
	Secret string
	// Backoff is the retry schedule; zero means DefaultBackoff.
	Backoff Backoff
	// Timeout bounds one attempt; zero means DefaultTimeout.
	Timeout time.Duration
	// Client sends the deliveries; nil means a client with Timeout that
	// does not follow redirects (a redirect is a failed attempt).
	Client *http.Client
	// Logger receives one line per failed attempt (never the secret or
	// the event data).
	Logger *slog.Logger
	// Now stamps created_at; nil means time.Now.
	Now func() time.Time
}

// Service records and delivers events.
type Service struct {
	db      *sqlx.DB
	url     string
	signer  *Signer
	backoff Backoff
	timeout time.Duration
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
	// jobs inserts delivery jobs: an insert-only River client of its own,
	// so the Service is complete when New returns, whichever River client
	// (with its workers) runs the jobs.
	jobs *river.Client[*sql.Tx]
}

// Publisher records one of minigate's events and inserts its delivery job
// in the caller's transaction tx, so that the event exists (and will be
// sent) exactly when the state change that caused it commits. *Service
// implements it; domain packages (orders, customerservice) take it as
// their one way of publishing.
type Publisher interface {
	Publish(ctx context.Context, tx *sqlx.Tx, typ string, data any) (Event, error)
}

var _ Publisher = (*Service)(nil)

// New returns a Service; register its worker with AddWorkers on the River
// client that runs jobs.
func New(db *sqlx.DB, opts Options) (*Service, error) {
	s := &Service{db: db, url: opts.URL, backoff: opts.Backoff, timeout: opts.Timeout, client: opts.Client, log: opts.Logger, now: opts.Now}
	jobs, err := river.NewClient(riverdatabasesql.New(db.DB), &river.Config{})
	if err != nil {
		return nil, fmt.Errorf("events: job inserter: %w", err)
	}
	s.jobs = jobs
	if s.backoff == (Backoff{}) {
		s.backoff = DefaultBackoff
	}
	if err := s.backoff.validate(); err != nil {
		return nil, err
	}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if s.client == nil {
		s.client = &http.Client{
			Timeout:       s.timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.url != "" {
		signer, err := NewSigner(opts.Secret)
		if err != nil {
			return nil, err
		}
		s.signer = signer
	}
	return s, nil
}

// AddWorkers registers the delivery worker on w and returns how many
// workers it added.
func (s *Service) AddWorkers(w *river.Workers) int {
	river.AddWorker(w, &deliverWorker{s: s})
	return 1
}

// Publish records an event of type typ with data (encoded as JSON) and,
// when an events URL is configured, inserts its delivery job, both in the
// caller's transaction tx: the event exists, and will be sent, exactly
// when tx commits. It does no network I/O.
func (s *Service) Publish(ctx context.Context, tx *sqlx.Tx, typ string, data any) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("events: publish %s: encode data: %w", typ, err)
	}
	ev := Event{
		ID: ids.New("evt"), Type: typ, Data: raw, State: StatePending,
		CreatedAt: s.now().UTC().Truncate(time.Microsecond),
	}
	if s.url == "" {
		ev.State = StateNotConfigured
	}
	if _, err := tx.ExecContext(ctx, EventInsert, ev.ID, ev.Type, string(ev.Data), ev.State, ev.CreatedAt); err != nil {
		return Event{}, fmt.Errorf("events: publish %s: %w", typ, err)
	}
	if ev.State == StatePending {
		if err := s.enqueue(ctx, tx, ev.ID); err != nil {
			return Event{}, fmt.Errorf("events: publish %s: %w", typ, err)
		}
	}
	return ev, nil
}

func (s *Service) enqueue(ctx context.Context, tx *sqlx.Tx, id string) error {
	if _, err := s.jobs.InsertTx(ctx, tx.Tx, DeliverArgs{EventID: id}, &river.InsertOpts{MaxAttempts: s.backoff.MaxAttempts}); err != nil {
		return fmt.Errorf("insert delivery job: %w", err)
	}
	return nil
}

// Get returns an event and its delivery attempts, oldest first.
func (s *Service) Get(ctx context.Context, id string) (Event, []Delivery, error) {
	ev, err := getEvent(ctx, s.db, id)
	if err != nil {
		return Event{}, nil, err
	}
	ds, err := listDeliveries(ctx, s.db, id)
	if err != nil {
		return Event{}, nil, err
	}
	return ev, ds, nil
}

// ListParams filters List.
type ListParams struct {
	Type  string
	State State
	// Before is a cursor: only events with smaller ids (older); empty for
	// the newest.
	Before string
	Limit  int
}

// List returns events newest first.
func (s *Service) List(ctx context.Context, p ListParams) ([]Event, error) {
	return listEvents(ctx, s.db, p)
}

// Redeliver sends an event once more, now, as a new delivery job (with
// the usual retries), whatever its state; the state becomes pending until
// that job succeeds or gives up.
func (s *Service) Redeliver(ctx context.Context, id string) (Event, error) {
	if s.url == "" {
		return Event{}, ErrNotConfigured
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return Event{}, fmt.Errorf("events: redeliver: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	ev, err := scanEvent(tx.QueryRowxContext(ctx, EventSetPending, id))
	if err != nil {
		return Event{}, err
	}
	if err := s.enqueue(ctx, tx, id); err != nil {
		return Event{}, fmt.Errorf("events: redeliver: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Event{}, fmt.Errorf("events: redeliver: %w", err)
	}
	return ev, nil
}
