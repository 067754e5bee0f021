package orders

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// ErrNotFound is returned by store functions when no row matches.
var ErrNotFound = errors.New("orders: not found")

// errOutTradeNoTaken is returned when an app already has an order with the
// out_trade_no.
var errOutTradeNoTaken = errors.New("orders: out_trade_no already used in this app")

const orderColumns = `id, app, platform, user_id, payer_openid, payer_alipay_user_id, out_trade_no,
	description, attach, amount, currency, status, needs_review, prepay_id, pay_params,
	prepay_claimed_until, transaction_id, refunded_amount, expires_at, paid_at, closed_at,
	next_check_at, check_count, created_at, updated_at`

const refundColumns = `id, order_id, app, out_refund_no, amount, reason, status, platform_refund_id,
	failure, claimed_until, succeeded_at, next_check_at, check_count, created_at, updated_at`

// OrderInsertWithKey stores an idempotency key, the order it creates and the
// order's first timeline row in one statement. It returns no row when the
// key already exists (the caller then reads the key).
const OrderInsertWithKey = `
WITH k AS (
	INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at)
	VALUES ($1::text, $2::text, $3::text, $4::text, $16::timestamptz)
	ON CONFLICT DO NOTHING
	RETURNING resource_id
), o AS (
	INSERT INTO orders (id, app, platform, user_id, payer_openid, payer_alipay_user_id, out_trade_no,
		description, attach, amount, currency, expires_at, prepay_claimed_until, next_check_at,
		created_at, updated_at)
	SELECT k.resource_id, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, $11::text,
		$12::text, $13::bigint, $14::text, $15::timestamptz, $17::timestamptz, $18::timestamptz,
		$16::timestamptz, $16::timestamptz
	FROM k
	RETURNING ` + orderColumns + `
), e AS (
	INSERT INTO order_events (order_id, kind, to_status, source, created_at)
	SELECT id, 'created', status, 'api', created_at FROM o
)
SELECT ` + orderColumns + ` FROM o`

// IdempotencyKeyGet reads a stored idempotency key.
const IdempotencyKeyGet = `SELECT request_hash, resource_id FROM idempotency_keys WHERE scope = $1 AND key = $2`

// IdempotencyKeyInsert stores an idempotency key unless it exists.
const IdempotencyKeyInsert = `
INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING`

// OrderGet reads an order by id.
const OrderGet = `SELECT ` + orderColumns + ` FROM orders WHERE id = $1`

// OrderGetForUpdate reads and locks an order by id.
const OrderGetForUpdate = OrderGet + ` FOR UPDATE`

// OrderGetByOutTradeNoForUpdate reads and locks an app's order by out_trade_no.
const OrderGetByOutTradeNoForUpdate = `SELECT ` + orderColumns + ` FROM orders WHERE app = $1 AND out_trade_no = $2 FOR UPDATE`

// OrderClaimPrepay marks a prepay call in flight for an unpaid order that has
// no prepay id and no other call in flight.
const OrderClaimPrepay = `
UPDATE orders SET prepay_claimed_until = $2
WHERE id = $1 AND prepay_id = '' AND status IN ('created', 'paying')
	AND (prepay_claimed_until IS NULL OR prepay_claimed_until < $3)
RETURNING ` + orderColumns

// OrderSetPrepay stores the platform's prepay handle and the signed client
// parameters, ends the claim and writes the timeline row.
const OrderSetPrepay = `
WITH u AS (
	UPDATE orders SET prepay_id = $2, pay_params = $3, prepay_claimed_until = NULL, updated_at = $4
	WHERE id = $1 AND prepay_id = ''
	RETURNING ` + orderColumns + `
), e AS (
	INSERT INTO order_events (order_id, kind, source, created_at)
	SELECT id, 'prepaid', 'api', $4::timestamptz FROM u
)
SELECT ` + orderColumns + ` FROM u`

// OrderReleasePrepay ends a failed prepay call's claim and records the
// failure on the timeline.
const OrderReleasePrepay = `
WITH u AS (
	UPDATE orders SET prepay_claimed_until = NULL, updated_at = $3
	WHERE id = $1 AND prepay_id = ''
	RETURNING id
)
INSERT INTO order_events (order_id, kind, source, detail, created_at)
SELECT id, 'prepay_failed', 'api', $2::jsonb, $3::timestamptz FROM u`

// OrderSetStatusIfIn moves an order to a status if it is in one of the given
// ones; paid moves record the transaction id and payment time, closed moves
// the closing time; a non-null $7 restarts the recovery schedule there. No
// row means it did not move.
const OrderSetStatusIfIn = `
UPDATE orders SET
	status = $3::text,
	updated_at = $4::timestamptz,
	transaction_id = CASE WHEN $5::text <> '' THEN $5::text ELSE transaction_id END,
	paid_at = CASE WHEN $3::text = 'paid' THEN $6::timestamptz ELSE paid_at END,
	closed_at = CASE WHEN $3::text = 'closed' THEN $4::timestamptz ELSE closed_at END,
	next_check_at = COALESCE($7::timestamptz, next_check_at),
	check_count = CASE WHEN $7::timestamptz IS NULL THEN check_count ELSE 0 END
WHERE id = $1 AND status = ANY($2::text[])
RETURNING ` + orderColumns

// OrderFlagForReview sets needs_review.
const OrderFlagForReview = `UPDATE orders SET needs_review = true, updated_at = $2 WHERE id = $1`

// OrderAddRefundedIfPaid adds a succeeded refund to a paid order and moves it
// to partially_refunded or refunded; no row when the order is not paid or
// the total would exceed the amount.
const OrderAddRefundedIfPaid = `
UPDATE orders SET
	refunded_amount = refunded_amount + $2::bigint,
	status = CASE WHEN refunded_amount + $2::bigint >= amount THEN 'refunded' ELSE 'partially_refunded' END,
	updated_at = $3
WHERE id = $1 AND status IN ('paid', 'partially_refunded') AND refunded_amount + $2::bigint <= amount
RETURNING ` + orderColumns

// OrderEventInsert appends a timeline row.
const OrderEventInsert = `
INSERT INTO order_events (order_id, kind, from_status, to_status, source, detail, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// OrderEventList reads an order's timeline, oldest first.
const OrderEventList = `
SELECT id, order_id, kind, from_status, to_status, source, detail, created_at
FROM order_events WHERE order_id = $1 ORDER BY id`

// OrderClaimDue claims up to $2 unpaid orders whose next check is due (for
// the recovery sweep), pushing their next check out along the back-off
// schedule $3 (seconds) but never far past their expiry. Rows locked by
// another instance are skipped.
const OrderClaimDue = `
UPDATE orders SET
	check_count = check_count + 1,
	next_check_at = LEAST(
		$1::timestamptz + ($3::bigint[])[LEAST(check_count + 2, cardinality($3::bigint[]))] * interval '1 second',
		GREATEST(expires_at, $1::timestamptz + interval '1 minute'))
WHERE id IN (
	SELECT id FROM orders
	WHERE status IN ('created', 'paying') AND next_check_at <= $1
	ORDER BY next_check_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED)
RETURNING ` + orderColumns

// RefundInsert stores a pending refund.
const RefundInsert = `
INSERT INTO refunds (id, order_id, app, out_refund_no, amount, reason, claimed_until, next_check_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
RETURNING ` + refundColumns

// RefundGet reads a refund by id.
const RefundGet = `SELECT ` + refundColumns + ` FROM refunds WHERE id = $1`

// RefundGetForUpdate reads and locks a refund by id.
const RefundGetForUpdate = RefundGet + ` FOR UPDATE`

// RefundGetByOutRefundNo reads an app's refund by out_refund_no.
const RefundGetByOutRefundNo = `SELECT ` + refundColumns + ` FROM refunds WHERE app = $1 AND out_refund_no = $2`

// RefundListByOrder reads an order's refunds, oldest first.
const RefundListByOrder = `SELECT ` + refundColumns + ` FROM refunds WHERE order_id = $1 ORDER BY id`

// RefundReservedTotal sums an order's refunds that are pending or succeeded.
const RefundReservedTotal = `SELECT COALESCE(sum(amount), 0) FROM refunds WHERE order_id = $1 AND status IN ('pending', 'succeeded')`

// RefundClaim marks a refund call in flight for a pending refund with no
// other call in flight.
const RefundClaim = `
UPDATE refunds SET claimed_until = $2
WHERE id = $1 AND status = 'pending' AND (claimed_until IS NULL OR claimed_until < $3)
RETURNING ` + refundColumns

// RefundRelease ends a refund call's claim and stores the platform's refund id.
const RefundRelease = `
UPDATE refunds SET claimed_until = NULL,
	platform_refund_id = CASE WHEN $2::text <> '' THEN $2::text ELSE platform_refund_id END, updated_at = $3
WHERE id = $1
RETURNING ` + refundColumns

// RefundSetStatusIfPending finishes a pending refund; no row when it is not
// pending any more.
const RefundSetStatusIfPending = `
UPDATE refunds SET status = $2::text,
	platform_refund_id = CASE WHEN $3::text <> '' THEN $3::text ELSE platform_refund_id END,
	failure = $4,
	succeeded_at = CASE WHEN $2::text = 'succeeded' THEN $5::timestamptz ELSE succeeded_at END,
	claimed_until = NULL,
	updated_at = $6
WHERE id = $1 AND status = 'pending'
RETURNING ` + refundColumns

// RefundClaimDue claims up to $2 pending refunds whose next check is due.
const RefundClaimDue = `
UPDATE refunds SET
	check_count = check_count + 1,
	next_check_at = $1::timestamptz + ($3::bigint[])[LEAST(check_count + 2, cardinality($3::bigint[]))] * interval '1 second'
WHERE id IN (
	SELECT id FROM refunds
	WHERE status = 'pending' AND next_check_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
	ORDER BY next_check_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED)
RETURNING ` + refundColumns

// newOrder is what insertOrder stores.
type newOrder struct {
	ID, App, Platform     string
	UserID                *string
	OpenID, AlipayUserID  string
	OutTradeNo            string
	Description, Attach   string
	Amount                int64
	Currency              string
	ExpiresAt, Now        time.Time
	ClaimUntil, NextCheck time.Time
}

// insertOrder stores the order with its idempotency key. It returns
// created=false (and no order) when the key already exists.
func insertOrder(ctx context.Context, ex sqlx.ExtContext, scope, key, hash string, n newOrder) (*Order, bool, error) {
	var o Order
	err := sqlx.GetContext(ctx, ex, &o, OrderInsertWithKey,
		scope, key, hash, n.ID, n.App, n.Platform, n.UserID, n.OpenID, n.AlipayUserID, n.OutTradeNo,
		n.Description, n.Attach, n.Amount, n.Currency, n.ExpiresAt, n.Now, n.ClaimUntil, n.NextCheck)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if isUniqueViolation(err, "orders_app_out_trade_no_key") {
		return nil, false, errOutTradeNoTaken
	}
	if err != nil {
		return nil, false, fmt.Errorf("orders: insert order: %w", err)
	}
	return &o, true, nil
}

func isUniqueViolation(err error, constraint string) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == "23505" && pe.Constraint == constraint
}

// idempotencyKey is a stored key.
type idempotencyKey struct {
	RequestHash string `db:"request_hash"`
	ResourceID  string `db:"resource_id"`
}

func getIdempotencyKey(ctx context.Context, ex sqlx.ExtContext, scope, key string) (*idempotencyKey, error) {
	var k idempotencyKey
	err := sqlx.GetContext(ctx, ex, &k, IdempotencyKeyGet, scope, key)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("orders: get idempotency key: %w", err)
	}
	return &k, nil
}

// insertIdempotencyKey stores a key; false when it already exists.
func insertIdempotencyKey(ctx context.Context, ex sqlx.ExtContext, scope, key, hash, resourceID string, now time.Time) (bool, error) {
	res, err := ex.ExecContext(ctx, IdempotencyKeyInsert, scope, key, hash, resourceID, now)
	if err != nil {
		return false, fmt.Errorf("orders: insert idempotency key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("orders: insert idempotency key: %w", err)
	}
	return n == 1, nil
}

// getOrder runs one of the single-order queries.
func getOrder(ctx context.Context, ex sqlx.ExtContext, query string, args ...any) (*Order, error) {
	var o Order
	err := sqlx.GetContext(ctx, ex, &o, query, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("orders: get order: %w", err)
	}
	return &o, nil
}

// claimPrepay returns the claimed order, or ErrNotFound when the order has a
// prepay id, is not unpaid, or another call is in flight.
func claimPrepay(ctx context.Context, ex sqlx.ExtContext, id string, until, now time.Time) (*Order, error) {
	return getOrder(ctx, ex, OrderClaimPrepay, id, until, now)
}

func setPrepay(ctx context.Context, ex sqlx.ExtContext, id, prepayID string, params PayParams, now time.Time) (*Order, error) {
	var raw []byte // NULL when the parameters could not be signed
	if params != nil {
		var err error
		if raw, err = json.Marshal(params); err != nil {
			return nil, fmt.Errorf("orders: encode pay params: %w", err)
		}
	}
	return getOrder(ctx, ex, OrderSetPrepay, id, prepayID, raw, now)
}

func releasePrepay(ctx context.Context, ex sqlx.ExtContext, id string, detail map[string]any, now time.Time) error {
	raw, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("orders: encode detail: %w", err)
	}
	if _, err := ex.ExecContext(ctx, OrderReleasePrepay, id, raw, now); err != nil {
		return fmt.Errorf("orders: release prepay: %w", err)
	}
	return nil
}

// setStatusIfIn performs a conditional state move; moved is false when the
// order was not in one of from.
func setStatusIfIn(ctx context.Context, ex sqlx.ExtContext, id string, from []Status, to Status, transactionID string, paidAt, nextCheck *time.Time, now time.Time) (*Order, bool, error) {
	fs := make([]string, len(from))
	for i, s := range from {
		fs[i] = string(s)
	}
	o, err := getOrder(ctx, ex, OrderSetStatusIfIn, id, pq.Array(fs), string(to), now, transactionID, paidAt, nextCheck)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("orders: set status %s: %w", to, err)
	}
	return o, true, nil
}

func flagForReview(ctx context.Context, ex sqlx.ExtContext, id string, now time.Time) error {
	if _, err := ex.ExecContext(ctx, OrderFlagForReview, id, now); err != nil {
		return fmt.Errorf("orders: flag for review: %w", err)
	}
	return nil
}

// addRefunded adds a succeeded refund's amount; moved is false when the
// order is not paid or the total would exceed the amount.
func addRefunded(ctx context.Context, ex sqlx.ExtContext, id string, amount int64, now time.Time) (*Order, bool, error) {
	o, err := getOrder(ctx, ex, OrderAddRefundedIfPaid, id, amount, now)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("orders: add refunded amount: %w", err)
	}
	return o, true, nil
}

// timelineRow is one timeline row to append.
type timelineRow struct {
	OrderID  string
	Kind     string
	From, To Status
	Source   Source
	Detail   map[string]any
}

func insertTimeline(ctx context.Context, ex sqlx.ExtContext, r timelineRow, now time.Time) error {
	detail := []byte("{}")
	if len(r.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(r.Detail); err != nil {
			return fmt.Errorf("orders: encode timeline detail: %w", err)
		}
	}
	if _, err := ex.ExecContext(ctx, OrderEventInsert, r.OrderID, r.Kind, string(r.From), string(r.To), string(r.Source), detail, now); err != nil {
		return fmt.Errorf("orders: insert timeline row: %w", err)
	}
	return nil
}

func listTimeline(ctx context.Context, ex sqlx.ExtContext, orderID string) ([]TimelineEntry, error) {
	var out []TimelineEntry
	if err := sqlx.SelectContext(ctx, ex, &out, OrderEventList, orderID); err != nil {
		return nil, fmt.Errorf("orders: list timeline: %w", err)
	}
	return out, nil
}

// ListFilter selects orders for GET /v1/orders.
type ListFilter struct {
	App         string
	Status      Status
	From, To    time.Time // created_at range [From, To); zero = open
	NeedsReview bool
	OutTradeNo  string
	UserID      string
	// Cursor is the id of the last order of the previous page; pages run
	// newest first.
	Cursor string
	Limit  int
}

func listOrders(ctx context.Context, ex sqlx.ExtContext, f ListFilter) ([]Order, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.App != "" {
		add("app = ?", f.App)
	}
	if f.Status != "" {
		add("status = ?", string(f.Status))
	}
	if !f.From.IsZero() {
		add("created_at >= ?", f.From)
	}
	if !f.To.IsZero() {
		add("created_at < ?", f.To)
	}
	if f.NeedsReview {
		where = append(where, "needs_review")
	}
	if f.OutTradeNo != "" {
		add("out_trade_no = ?", f.OutTradeNo)
	}
	if f.UserID != "" {
		add("user_id = ?", f.UserID)
	}
	if f.Cursor != "" {
		add("id < ?", f.Cursor)
	}
	q := `SELECT ` + orderColumns + ` FROM orders`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit)
	q += ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	var out []Order
	if err := sqlx.SelectContext(ctx, ex, &out, q, args...); err != nil {
		return nil, fmt.Errorf("orders: list orders: %w", err)
	}
	return out, nil
}

// claimDueOrders claims unpaid orders whose recovery check is due.
func claimDueOrders(ctx context.Context, ex sqlx.ExtContext, now time.Time, limit int, schedule []int64) ([]Order, error) {
	var out []Order
	if err := sqlx.SelectContext(ctx, ex, &out, OrderClaimDue, now, limit, pq.Array(schedule)); err != nil {
		return nil, fmt.Errorf("orders: claim due orders: %w", err)
	}
	return out, nil
}

// newRefund is what insertRefund stores.
type newRefund struct {
	ID, OrderID, App, OutRefundNo string
	Amount                        int64
	Reason                        string
	ClaimUntil, NextCheck, Now    time.Time
}

func insertRefund(ctx context.Context, ex sqlx.ExtContext, n newRefund) (*StoredRefund, error) {
	var r StoredRefund
	err := sqlx.GetContext(ctx, ex, &r, RefundInsert, n.ID, n.OrderID, n.App, n.OutRefundNo, n.Amount, n.Reason, n.ClaimUntil, n.NextCheck, n.Now)
	if err != nil {
		return nil, fmt.Errorf("orders: insert refund: %w", err)
	}
	return &r, nil
}

func getRefund(ctx context.Context, ex sqlx.ExtContext, query string, args ...any) (*StoredRefund, error) {
	var r StoredRefund
	err := sqlx.GetContext(ctx, ex, &r, query, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("orders: get refund: %w", err)
	}
	return &r, nil
}

// claimRefund returns the claimed refund, or ErrNotFound when it is not
// pending or another call is in flight.
func claimRefund(ctx context.Context, ex sqlx.ExtContext, id string, until, now time.Time) (*StoredRefund, error) {
	return getRefund(ctx, ex, RefundClaim, id, until, now)
}

// releaseRefund ends a refund call's claim, storing the platform's refund id
// when one came.
func releaseRefund(ctx context.Context, ex sqlx.ExtContext, id, platformID string, now time.Time) (*StoredRefund, error) {
	return getRefund(ctx, ex, RefundRelease, id, platformID, now)
}

func listRefunds(ctx context.Context, ex sqlx.ExtContext, orderID string) ([]StoredRefund, error) {
	var out []StoredRefund
	if err := sqlx.SelectContext(ctx, ex, &out, RefundListByOrder, orderID); err != nil {
		return nil, fmt.Errorf("orders: list refunds: %w", err)
	}
	return out, nil
}

func reservedRefundTotal(ctx context.Context, ex sqlx.ExtContext, orderID string) (int64, error) {
	var n int64
	if err := sqlx.GetContext(ctx, ex, &n, RefundReservedTotal, orderID); err != nil {
		return 0, fmt.Errorf("orders: sum refunds: %w", err)
	}
	return n, nil
}

// setRefundStatusIfPending finishes a pending refund; moved is false when it
// was not pending.
func setRefundStatusIfPending(ctx context.Context, ex sqlx.ExtContext, id string, to RefundStatus, platformID, failure string, succeededAt *time.Time, now time.Time) (*StoredRefund, bool, error) {
	r, err := getRefund(ctx, ex, RefundSetStatusIfPending, id, string(to), platformID, failure, succeededAt, now)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("orders: set refund status %s: %w", to, err)
	}
	return r, true, nil
}

func claimDueRefunds(ctx context.Context, ex sqlx.ExtContext, now time.Time, limit int, schedule []int64) ([]StoredRefund, error) {
	var out []StoredRefund
	if err := sqlx.SelectContext(ctx, ex, &out, RefundClaimDue, now, limit, pq.Array(schedule)); err != nil {
		return nil, fmt.Errorf("orders: claim due refunds: %w", err)
	}
	return out, nil
}
