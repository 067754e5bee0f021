package webhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/metrics"
)

// Kind names a callback channel; it is the last segment of the callback
// route (/callbacks/{app}/{kind}) and part of the de-duplication key.
type Kind string

// The callback channels.
const (
	KindMessages Kind = "messages"
	KindPayments Kind = "payments"
)

// Defaults for Options.
const (
	// DefaultDeadline bounds verifying and storing one callback, inside the
	// platforms' 5-second reply window.
	DefaultDeadline = 4 * time.Second
	// DefaultStoreTimeout bounds storing one callback (or keeping a
	// refused one). Postgres commits these small transactions in
	// milliseconds; one that takes this long means the database is
	// unreachable or saturated, and answering 5xx now lets the platform
	// retry instead of holding its connection until its own time limit.
	DefaultStoreTimeout = 600 * time.Millisecond
	// rejectedBodyKept is how much of a rejected body is kept.
	rejectedBodyKept = 4 << 10
)

// Metric outcomes of metrics.Callbacks.
const (
	OutcomeAccepted  = "accepted"
	OutcomeDuplicate = "duplicate"
	OutcomeRejected  = "rejected"
	OutcomeError     = "error"
)

// Opened is a verified, decrypted and identified callback: the result of a
// Spec's Open step.
type Opened[T any] struct {
	// DedupKey identifies the callback across the platform's retries
	// (MsgId, WeChat Pay notification id, Alipay notify_id, …). Required;
	// unique per (app, kind).
	DedupKey string
	// EventType is the platform's name for what happened (text, event,
	// TRANSACTION.SUCCESS, TRADE_SUCCESS, …).
	EventType string
	// Summary is a short, personal-data-free description, logged at info
	// level and stored with the callback.
	Summary map[string]any
	// Payload is the trusted payload handed to Apply.
	Payload T
	// Stored is what is stored as the callback's trusted payload, encoded
	// as JSON; nil stores Payload.
	Stored any
	// Ack, when set, is this callback's "received" reply in place of the
	// Spec's: pushes of some events are answered in their own format.
	Ack *Reply
}

// Callback is a stored callback, as Apply sees it.
type Callback struct {
	ID         int64
	App        string
	Kind       Kind
	DedupKey   string
	EventType  string
	ReceivedAt time.Time
}

// Spec is one callback channel of one app: the steps that differ per
// platform and per domain. The pipeline runs them in a fixed order.
type Spec[T any] struct {
	// App is minigate's app id (the {app} of the route).
	App string
	// Kind is the channel.
	Kind Kind
	// Open verifies the signature (and timestamp window), decrypts,
	// checks that the callback is addressed to this app and parses it.
	// Input that is not provably from the platform must yield a
	// *VerifyError (use Reject); any other error is treated as a
	// temporary failure (the platform is asked to retry).
	Open func(ctx context.Context, req Request) (Opened[T], error)
	// Apply is the domain's effect. It runs inside the transaction that
	// stores the callback, only for the first delivery of a DedupKey, and
	// must insert its River jobs with InsertTx on tx.Tx so that they are
	// committed (or rolled back) with it. It must not call platforms or do
	// other slow work: that belongs in the jobs. Returning a *VerifyError
	// refuses the callback (4xx, kept in rejected_callbacks, nothing
	// stored); any other error rolls back and asks the platform to retry.
	// Nil means the callback is only stored.
	Apply func(ctx context.Context, tx *sqlx.Tx, cb Callback, payload T) error
	// Ack is the platform's "received" reply, sent after the commit and
	// for duplicates.
	Ack Reply
	// Nack builds the platform's "not received" reply body for message;
	// the pipeline sets the status (4xx for refused callbacks, 503 when
	// the callback could not be stored). Nil means a text/plain body.
	Nack func(message string) Reply
}

// Options configures a Pipeline.
type Options struct {
	// BodyLimit bounds callback bodies (bytes); larger ones are refused
	// with 413. Zero means no limit beyond the HTTP server's.
	BodyLimit int
	// RejectedKept bounds the rejected_callbacks table; zero keeps
	// config.DefaultRejectedCallbacksKept rows.
	RejectedKept int
	// Deadline bounds verifying and storing one callback; zero means
	// DefaultDeadline.
	Deadline time.Duration
	// StoreTimeout bounds the database work for one callback, within
	// Deadline; zero means DefaultStoreTimeout. The reply never waits
	// longer, even when the database does not answer at all (db.Bounded).
	StoreTimeout time.Duration
	// Logger receives one line per callback (never secrets or payloads).
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Pipeline runs platform callbacks through the fixed order: bound the body →
// Open (verify → decrypt → identify) → store and de-duplicate, in one
// transaction with the domain's Apply → reply in the platform's format.
//
// Guarantees: a callback is acknowledged only after its row (and Apply's
// effects and jobs) are committed; a duplicate (same app, kind and
// DedupKey, from any instance) is acknowledged and changes nothing; a
// refused callback changes nothing, gets a 4xx and is kept, redacted and
// truncated, in rejected_callbacks; a failure to store gets a 503 so the
// platform retries.
type Pipeline struct {
	db   *sqlx.DB
	opts Options
	log  *slog.Logger
}

// NewPipeline returns a Pipeline storing into db.
func NewPipeline(db *sqlx.DB, opts Options) *Pipeline {
	if opts.Deadline == 0 {
		opts.Deadline = DefaultDeadline
	}
	if opts.StoreTimeout == 0 {
		opts.StoreTimeout = DefaultStoreTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Pipeline{db: db, opts: opts, log: log}
}

// NewRequest copies an inbound Fiber request into a Request: method,
// query, headers, remote address and the raw body. The body is copied
// because Fiber reuses its buffers, and read raw (BodyRaw): a
// Content-Encoding is not undone, since decompressing would escape the body
// limit and no platform compresses its callbacks.
func NewRequest(c *fiber.Ctx, now time.Time) Request {
	q := url.Values{}
	c.Context().QueryArgs().VisitAll(func(k, v []byte) { q.Add(string(k), string(v)) })
	h := http.Header{}
	c.Request().Header.VisitAll(func(k, v []byte) { h.Add(string(k), string(v)) })
	return Request{
		Method:     c.Method(),
		Query:      q,
		Header:     h,
		Body:       append([]byte(nil), c.BodyRaw()...),
		RemoteAddr: c.IP(),
		ReceivedAt: now,
	}
}

// Handle runs the request in c through the pipeline with spec and writes
// the reply.
func Handle[T any](p *Pipeline, c *fiber.Ctx, spec Spec[T]) error {
	rep := Process(c.UserContext(), p, spec, NewRequest(c, p.opts.Now()))
	return Send(c, rep)
}

// Send writes rep to c.
func Send(c *fiber.Ctx, rep Reply) error {
	if rep.ContentType != "" {
		c.Set(fiber.HeaderContentType, rep.ContentType)
	}
	return c.Status(rep.Status).Send(rep.Body)
}

// Process runs req through the pipeline with spec and returns the reply to
// send. It never panics on hostile input and never returns an
// acknowledgement for a callback that is not committed.
func Process[T any](ctx context.Context, p *Pipeline, spec Spec[T], req Request) Reply {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Deadline)
	defer cancel()
	if p.opts.BodyLimit > 0 && len(req.Body) > p.opts.BodyLimit {
		return p.refuse(ctx, spec.App, spec.Kind, req, Reject(RejectTooLarge, "body of %d bytes exceeds the limit of %d", len(req.Body), p.opts.BodyLimit), spec.Nack)
	}
	opened, err := spec.Open(ctx, req)
	if err != nil {
		if ve, ok := AsVerifyError(err); ok {
			return p.refuse(ctx, spec.App, spec.Kind, req, ve, spec.Nack)
		}
		return p.fail(spec.App, spec.Kind, fmt.Errorf("webhooks: open: %w", err), spec.Nack)
	}
	if opened.DedupKey == "" {
		return p.fail(spec.App, spec.Kind, errors.New("webhooks: open: no de-duplication key"), spec.Nack)
	}
	ack := spec.Ack
	if opened.Ack != nil {
		ack = *opened.Ack
	}
	stored := opened.Stored
	if stored == nil {
		stored = opened.Payload
	}
	row := callbackRow{
		App: spec.App, Kind: string(spec.Kind),
		DedupKey: CleanText(opened.DedupKey), EventType: CleanText(opened.EventType),
		ReceivedAt: req.ReceivedAt,
	}
	if row.ReceivedAt.IsZero() {
		row.ReceivedAt = p.opts.Now()
	}
	if row.Summary, err = jsonText(opened.Summary); err != nil {
		return p.fail(spec.App, spec.Kind, err, spec.Nack)
	}
	if row.Payload, err = jsonText(stored); err != nil {
		return p.fail(spec.App, spec.Kind, err, spec.Nack)
	}

	// A nil *Callback is a duplicate.
	cb, err := db.Bounded(ctx, p.opts.StoreTimeout, func(ctx context.Context) (*Callback, error) {
		var cb *Callback
		err := p.inTx(ctx, func(tx *sqlx.Tx) error {
			id, ok, err := insertCallback(ctx, tx, row)
			if err != nil || !ok {
				return err
			}
			cb = &Callback{ID: id, App: spec.App, Kind: spec.Kind, DedupKey: row.DedupKey, EventType: row.EventType, ReceivedAt: row.ReceivedAt}
			if spec.Apply == nil {
				return nil
			}
			return spec.Apply(ctx, tx, *cb, opened.Payload)
		})
		return cb, err
	})
	if err != nil {
		if ve, ok := AsVerifyError(err); ok {
			return p.refuse(ctx, spec.App, spec.Kind, req, ve, spec.Nack)
		}
		return p.fail(spec.App, spec.Kind, err, spec.Nack)
	}
	if cb == nil {
		metrics.Callbacks.WithLabelValues(spec.App, string(spec.Kind), OutcomeDuplicate).Inc()
		p.log.Info("callback duplicate", "app", spec.App, "kind", spec.Kind, "event_type", row.EventType)
		return ack
	}
	metrics.Callbacks.WithLabelValues(spec.App, string(spec.Kind), OutcomeAccepted).Inc()
	p.log.Info("callback accepted", "app", spec.App, "kind", spec.Kind, "callback_id", cb.ID,
		"event_type", row.EventType, "summary", opened.Summary)
	return ack
}

func (p *Pipeline) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("webhooks: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("webhooks: commit: %w", err)
	}
	return nil
}

// fail answers a callback that could not be stored: 503, so the platform
// retries.
func (p *Pipeline) fail(app string, kind Kind, err error, nack func(string) Reply) Reply {
	metrics.Callbacks.WithLabelValues(app, string(kind), OutcomeError).Inc()
	p.log.Error("callback not stored; the platform will retry", "app", app, "kind", kind, "err", err)
	rep := nackReply(nack, "temporarily unavailable, retry")
	rep.Status = http.StatusServiceUnavailable
	return rep
}

// refuse answers a callback that failed verification with a 4xx and keeps
// it in rejected_callbacks. Failing to keep it is logged, not fatal: the
// answer is the same.
func (p *Pipeline) refuse(ctx context.Context, app string, kind Kind, req Request, ve *VerifyError, nack func(string) Reply) Reply {
	metrics.Callbacks.WithLabelValues(app, string(kind), OutcomeRejected).Inc()
	p.log.Warn("callback rejected", "app", app, "kind", kind, "reason", ve.Reason, "detail", ve.Detail,
		"remote_addr", req.RemoteAddr, "body_bytes", len(req.Body))
	row := rejectedRow(app, kind, req, ve, p.opts.Now())
	_, err := db.Bounded(context.WithoutCancel(ctx), p.opts.StoreTimeout, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, insertRejected(ctx, p.db, row, p.keep())
	})
	if err != nil {
		p.log.Error("rejected callback not kept", "app", app, "kind", kind, "err", err)
	}
	rep := nackReply(nack, "rejected: "+string(ve.Reason))
	rep.Status = RejectStatus(ve.Reason)
	return rep
}

func (p *Pipeline) keep() int {
	if p.opts.RejectedKept > 0 {
		return p.opts.RejectedKept
	}
	return defaultRejectedKept
}

// RejectStatus is the HTTP status a refused callback gets: 401 for what
// fails authentication (signatures, timestamp window, ciphertext), 403 for
// a callback addressed to another app or merchant, 413 for an oversize
// body, and 400 for everything else (malformed, unsupported, and reasons
// defined by domain packages, such as an unknown order).
func RejectStatus(r RejectReason) int {
	switch r {
	case RejectMissingSignature, RejectBadSignature, RejectBadMsgSignature, RejectStaleTimestamp, RejectBadCiphertext, RejectUnencrypted:
		return http.StatusUnauthorized
	case RejectForeignApp, RejectForeignMerchant:
		return http.StatusForbidden
	case RejectTooLarge:
		return http.StatusRequestEntityTooLarge
	default:
		return http.StatusBadRequest
	}
}

func nackReply(nack func(string) Reply, msg string) Reply {
	if nack != nil {
		return nack(msg)
	}
	return TextReply(http.StatusOK, msg)
}

// TextReply is a text/plain reply.
func TextReply(status int, body string) Reply {
	return Reply{Status: status, ContentType: "text/plain; charset=utf-8", Body: []byte(body)}
}

// CleanText makes s storable in a Postgres text column: invalid UTF-8 and
// NUL characters become U+FFFD.
func CleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
