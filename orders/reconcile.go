package orders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/minigate/minigate/webhooks"
)

// What package reconcile needs from the books: the orders paid and the
// refunds that succeeded in a business day, lookups by the platforms'
// numbers, and state moves with source reconcile.

// OrderListPaidBetween lists an app's orders paid in [$2, $3), by payment time.
const OrderListPaidBetween = `SELECT ` + orderColumns + `
FROM orders WHERE app = $1 AND paid_at >= $2 AND paid_at < $3 ORDER BY paid_at, id`

// OrderListByOutTradeNos reads an app's orders with the given out_trade_nos.
const OrderListByOutTradeNos = `SELECT ` + orderColumns + `
FROM orders WHERE app = $1 AND out_trade_no = ANY($2::text[])`

// refundOfOrderColumns are a refund's columns and its order's out_trade_no.
const refundOfOrderColumns = refundColumns + `,
	(SELECT o.out_trade_no FROM orders o WHERE o.id = refunds.order_id) AS out_trade_no`

// RefundListSucceededBetween lists an app's refunds that succeeded in
// [$2, $3), with their orders' out_trade_no.
const RefundListSucceededBetween = `SELECT ` + refundOfOrderColumns + `
FROM refunds WHERE app = $1 AND status = 'succeeded' AND succeeded_at >= $2 AND succeeded_at < $3
ORDER BY succeeded_at, id`

// RefundListByOutRefundNos reads an app's refunds with the given
// out_refund_nos, with their orders' out_trade_no.
const RefundListByOutRefundNos = `SELECT ` + refundOfOrderColumns + `
FROM refunds WHERE app = $1 AND out_refund_no = ANY($2::text[])`

// RefundOfOrder is a stored refund with its order's out_trade_no.
type RefundOfOrder struct {
	StoredRefund
	OutTradeNo string `db:"out_trade_no" json:"out_trade_no"`
}

// PaidBetween returns app's orders whose payment time falls in [from, to),
// whatever happened to them since (refunds included).
func (s *Service) PaidBetween(ctx context.Context, app string, from, to time.Time) ([]Order, error) {
	var out []Order
	if err := sqlx.SelectContext(ctx, s.db, &out, OrderListPaidBetween, app, from, to); err != nil {
		return nil, fmt.Errorf("orders: list paid orders: %w", err)
	}
	return out, nil
}

// ByOutTradeNo returns app's orders with the given out_trade_nos, by
// out_trade_no; numbers without an order are absent.
func (s *Service) ByOutTradeNo(ctx context.Context, app string, nos []string) (map[string]*Order, error) {
	out, err := selectByKey(ctx, s.db, OrderListByOutTradeNos, func(o *Order) string { return o.OutTradeNo }, app, pq.Array(nos))
	if err != nil {
		return nil, fmt.Errorf("orders: list orders by out_trade_no: %w", err)
	}
	return out, nil
}

// RefundsSucceededBetween returns app's refunds that succeeded in [from, to).
func (s *Service) RefundsSucceededBetween(ctx context.Context, app string, from, to time.Time) ([]RefundOfOrder, error) {
	var out []RefundOfOrder
	if err := sqlx.SelectContext(ctx, s.db, &out, RefundListSucceededBetween, app, from, to); err != nil {
		return nil, fmt.Errorf("orders: list succeeded refunds: %w", err)
	}
	return out, nil
}

// RefundsByOutRefundNo returns app's refunds with the given out_refund_nos,
// by out_refund_no; numbers without a refund are absent.
func (s *Service) RefundsByOutRefundNo(ctx context.Context, app string, nos []string) (map[string]*RefundOfOrder, error) {
	out, err := selectByKey(ctx, s.db, RefundListByOutRefundNos, func(r *RefundOfOrder) string { return r.OutRefundNo }, app, pq.Array(nos))
	if err != nil {
		return nil, fmt.Errorf("orders: list refunds by out_refund_no: %w", err)
	}
	return out, nil
}

// selectByKey runs query and indexes its rows by key.
func selectByKey[T any](ctx context.Context, q sqlx.QueryerContext, query string, key func(*T) string, args ...any) (map[string]*T, error) {
	var list []T
	if err := sqlx.SelectContext(ctx, q, &list, query, args...); err != nil {
		return nil, err
	}
	out := make(map[string]*T, len(list))
	for i := range list {
		out[key(&list[i])] = &list[i]
	}
	return out, nil
}

// ApplyReconciledRefund applies what the platform says about one of app's
// refunds (source reconcile), with the same checks and moves as a refund
// notification: a pending refund the platform completed succeeds once; one
// that disagrees with the books, or a refund minigate did not make, flags
// the order. An out_trade_no without an order is errOrderNotFound.
func (s *Service) ApplyReconciledRefund(ctx context.Context, appID string, r Refund) error {
	a, ok := s.apps[appID]
	if !ok {
		return errAppNotFound
	}
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		return s.applyRefund(ctx, tx, a, &r, SourceReconcile, "", map[string]any{"refund_state": string(r.State)})
	})
	if ve, ok := webhooks.AsVerifyError(err); ok && ve.Reason == RejectUnknownOrder {
		return errOrderNotFound
	}
	return err
}

// FlagReconciled flags order id for review with reason (source reconcile),
// unless it is flagged already; it reports whether it flagged.
func (s *Service) FlagReconciled(ctx context.Context, id, reason string, detail map[string]any) (bool, error) {
	flagged := false
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		o, err := getOrder(ctx, tx, OrderGetForUpdate, id)
		if errors.Is(err, ErrNotFound) {
			return errOrderNotFound
		}
		if err != nil || o.NeedsReview {
			return err
		}
		flagged = true
		_, err = s.flag(ctx, tx, o, SourceReconcile, reason, detail)
		return err
	})
	return flagged, err
}
