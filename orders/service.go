package orders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/webhooks"
)

// App is one app's payment setup as orders needs it.
type App struct {
	ID       string // minigate's app id, the {app} in routes
	Platform string // wechat, qq or alipay
	// AppID is the platform's app id; notifications and queries that name
	// another app never move an order.
	AppID string
	// MchID is the merchant: WeChat Pay / QQ wallet mch_id, Alipay
	// seller_id. Empty means it is not checked (an Alipay app without a
	// configured seller_id).
	MchID string
	// NotifyURL is given to the platform for payment and refund notifications.
	NotifyURL string
	// Payments is the platform adapter; nil when the app has no merchant
	// account (its order routes answer 501).
	Payments Payments
}

// Identity is a minigate user's identity in one app.
type Identity struct {
	UserID       string
	OpenID       string // openid; for Alipay the open_id, or the user_id when the app has no open ids
	AlipayUserID string // Alipay user_id (2088…), when known
}

// Users finds minigate users' identities (implemented over the sessions
// package). ok is false when there is no such identity.
type Users interface {
	// IdentityOfUser returns the identity user userID has in app.
	IdentityOfUser(ctx context.Context, app, userID string) (id Identity, ok bool, err error)
	// IdentityByOpenID returns the identity with this openid in app.
	IdentityByOpenID(ctx context.Context, app, openID string) (id Identity, ok bool, err error)
}

// Defaults and limits.
const (
	// DefaultExpiresIn is how long an order stays payable when the request
	// does not say (WeChat's prepay_id lives 2 hours).
	DefaultExpiresIn = 2 * time.Hour
	// MinExpiresIn and MaxExpiresIn bound expires_in.
	MinExpiresIn = time.Minute
	MaxExpiresIn = 7 * 24 * time.Hour
	// MaxAmount is the largest order, in fen (Alipay's ceiling of
	// 100,000,000 yuan).
	MaxAmount int64 = 10_000_000_000
	// DefaultCallTimeout is how long a platform call may take when
	// Options.CallTimeout is zero; claims on in-flight calls outlive it.
	DefaultCallTimeout = 8 * time.Second
	// claimMargin is added to the call timeout for claims.
	claimMargin = 5 * time.Second
	// DefaultSweepBatch bounds the orders (and refunds) one sweep handles.
	DefaultSweepBatch = 100
	// sweepParallelism bounds concurrent platform calls in a sweep.
	sweepParallelism = 4
)

// DefaultCheckSchedule is the recovery back-off: an unpaid order (or a
// pending refund) is queried this long after it was created, then after
// each following step; the last step repeats until the order expires.
var DefaultCheckSchedule = []time.Duration{
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour,
}

// Options configure New.
type Options struct {
	// Apps are the configured apps (with or without payments).
	Apps []App
	// Users resolves user_id payers and session owners.
	Users Users
	// Events records order.* and refund.* events in the state move's
	// transaction.
	Events events.Publisher
	// CallTimeout bounds one platform call (config limits.upstream_timeout).
	CallTimeout time.Duration
	// CheckSchedule overrides DefaultCheckSchedule.
	CheckSchedule []time.Duration
	// SweepBatch overrides DefaultSweepBatch.
	SweepBatch int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives diagnostics (never secrets or payer data).
	Logger *slog.Logger
}

// Service creates orders and refunds and drives them through their states.
type Service struct {
	db       *sqlx.DB
	apps     map[string]*App
	users    Users
	events   events.Publisher
	timeout  time.Duration
	schedule []int64 // seconds
	batch    int
	now      func() time.Time
	log      *slog.Logger
}

// New returns a Service storing into pool.
func New(pool *sqlx.DB, opts Options) (*Service, error) {
	if pool == nil || opts.Users == nil || opts.Events == nil {
		return nil, errors.New("orders: New needs a pool, Users and Events")
	}
	s := &Service{
		db: pool, apps: make(map[string]*App, len(opts.Apps)), users: opts.Users,
		events:  opts.Events,
		timeout: opts.CallTimeout, batch: opts.SweepBatch, now: opts.Now, log: opts.Logger,
	}
	for i := range opts.Apps {
		a := opts.Apps[i]
		if a.ID == "" {
			return nil, errors.New("orders: app without id")
		}
		if _, dup := s.apps[a.ID]; dup {
			return nil, fmt.Errorf("orders: duplicate app %q", a.ID)
		}
		s.apps[a.ID] = &a
	}
	if s.timeout <= 0 {
		s.timeout = DefaultCallTimeout
	}
	sched := opts.CheckSchedule
	if len(sched) == 0 {
		sched = DefaultCheckSchedule
	}
	for _, d := range sched {
		s.schedule = append(s.schedule, int64(max(d, time.Second)/time.Second))
	}
	if s.batch <= 0 {
		s.batch = DefaultSweepBatch
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s, nil
}

// API errors.
var (
	errAppNotFound      = apperr.New(apperr.NotFound, "app_not_found", "no such app")
	errPaymentsDisabled = apperr.New(apperr.Unsupported, "payments_not_configured", "this app has no merchant account configured")
	errOrderNotFound    = apperr.New(apperr.NotFound, "order_not_found", "no such order")
	errUserNotFound     = apperr.New(apperr.NotFound, "user_not_found", "the user has no identity in this app")
	errKeyRequired      = apperr.New(apperr.Invalid, "idempotency_key_required", "the Idempotency-Key header is required (1 to 255 printable ASCII characters)")
	errKeyReused        = apperr.New(apperr.Conflict, "idempotency_key_reused", "this Idempotency-Key was used with a different request")
	errInProgress       = apperr.New(apperr.Conflict, "request_in_progress", "a platform call for this request is in progress; retry shortly")
	errOutTradeNoUsed   = apperr.New(apperr.Conflict, "out_trade_no_used", "this app already has an order with this out_trade_no")
	errOrderPaid        = apperr.New(apperr.Conflict, "order_paid", "the order is paid")
	errOrderClosed      = apperr.New(apperr.Conflict, "order_closed", "the order is closed")
	errOrderFailed      = apperr.New(apperr.Conflict, "order_failed", "the order's payment failed")
	errOrderExpired     = apperr.New(apperr.Conflict, "order_expired", "the order has expired")
	errNotRefundable    = apperr.New(apperr.Conflict, "order_not_refundable", "only paid orders can be refunded")
	errRefundExceeds    = apperr.New(apperr.Conflict, "refund_exceeds_paid", "the refunds would exceed the paid amount")
	errNotClosed        = apperr.New(apperr.Unavailable, "platform_not_closed", "the platform still reports the order as payable; retry")
)

// RejectUnknownOrder refuses a genuine payment notification for an
// out_trade_no this app never created.
const RejectUnknownOrder webhooks.RejectReason = "unknown_order"

// app returns the app with payments configured.
func (s *Service) app(id string) (*App, error) {
	a, ok := s.apps[id]
	if !ok {
		return nil, errAppNotFound
	}
	if a.Payments == nil {
		return nil, errPaymentsDisabled
	}
	return a, nil
}

// claimUntil is when a claim on a platform call started now expires.
func (s *Service) claimUntil(now time.Time) time.Time { return now.Add(s.timeout + claimMargin) }

// firstCheck is when a new order or refund is first queried by the sweep.
func (s *Service) firstCheck(now time.Time) time.Time {
	return now.Add(time.Duration(s.schedule[0]) * time.Second)
}

// inTx runs fn in a transaction.
func (s *Service) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return db.InTx(ctx, s.db, fn)
}

// statusError is the 409 for an order that cannot take a request in its
// current state.
func statusError(st Status) error {
	switch {
	case st.PaidOrLater():
		return errOrderPaid
	case st == StatusClosed:
		return errOrderClosed
	case st == StatusFailed:
		return errOrderFailed
	}
	return nil
}

// platformDetail describes a failed platform call for the timeline, without
// personal data.
func platformDetail(err error) map[string]any {
	d := map[string]any{}
	if pe, ok := adapters.AsPlatformError(err); ok {
		d["platform"], d["api"], d["reason"] = pe.Platform, pe.API, string(pe.Reason)
		if pe.Code != "" {
			d["code"] = pe.Code
		}
		if pe.SubCode != "" {
			d["sub_code"] = pe.SubCode
		}
		if pe.Message != "" {
			d["message"] = pe.Message
		}
		return d
	}
	if ae, ok := apperr.As(err); ok {
		d["reason"] = ae.Code
		return d
	}
	d["reason"] = "error"
	return d
}
