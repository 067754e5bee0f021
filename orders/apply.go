package orders

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/webhooks"
)

// This file is the state machine. Every function here runs inside a
// transaction on an order locked with FOR UPDATE, and every move is also a
// conditional UPDATE, so a move happens once however many notifications,
// queries and API calls race for it. A move writes its timeline row and,
// for paid, closed, failed and refunds, its event in the same transaction.
//
// Paid while still created: a user may pay with the parameters returned at
// creation without the mini-program calling /pay. The order then moves
// created → paying → paid in one transaction, with two timeline rows (the
// first marked implied_by paid), so the contract's arrows hold.

// moveOpts are a state move's extras.
type moveOpts struct {
	transactionID string
	paidAt        *time.Time
	detail        map[string]any
	// recheck restarts the recovery schedule (entering paying).
	recheck bool
}

// move performs one conditional state move of o (whose Status must be the
// one it is moved from) and writes its timeline row.
func (s *Service) move(ctx context.Context, tx *sqlx.Tx, o *Order, from []Status, to Status, src Source, mo moveOpts) (*Order, bool, error) {
	now := s.now()
	var next *time.Time
	if mo.recheck {
		t := s.firstCheck(now)
		next = &t
	}
	moved, ok, err := setStatusIfIn(ctx, tx, o.ID, from, to, mo.transactionID, mo.paidAt, next, now)
	if err != nil || !ok {
		return nil, false, err
	}
	row := timelineRow{OrderID: o.ID, Kind: KindStatus, From: o.Status, To: to, Source: src, Detail: mo.detail}
	if err := insertTimeline(ctx, tx, row, now); err != nil {
		return nil, false, err
	}
	metrics.OrderMoves.WithLabelValues(o.App, string(o.Status), string(to), string(src)).Inc()
	return moved, true, nil
}

// mustMove is move on a locked order: not moving is a bug, not a race.
func (s *Service) mustMove(ctx context.Context, tx *sqlx.Tx, o *Order, to Status, src Source, mo moveOpts) (*Order, error) {
	moved, ok, err := s.move(ctx, tx, o, []Status{o.Status}, to, src, mo)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("orders: %s did not move %s → %s under lock", o.ID, o.Status, to)
	}
	return moved, nil
}

// flag marks o for review with a timeline row saying why. Repeated
// queries that find the same problem do not add rows.
func (s *Service) flag(ctx context.Context, tx *sqlx.Tx, o *Order, src Source, reason string, detail map[string]any) (*Order, error) {
	if o.NeedsReview && src == SourceQuery {
		return o, nil
	}
	now := s.now()
	if err := flagForReview(ctx, tx, o.ID, now); err != nil {
		return nil, err
	}
	d := maps.Clone(detail)
	if d == nil {
		d = map[string]any{}
	}
	d["reason"] = reason
	if err := insertTimeline(ctx, tx, timelineRow{OrderID: o.ID, Kind: KindFlagged, Source: src, Detail: d}, now); err != nil {
		return nil, err
	}
	s.log.Warn("orders: order flagged for review", "order_id", o.ID, "app", o.App, "reason", reason, "source", src)
	c := *o
	c.NeedsReview = true
	return &c, nil
}

func (s *Service) publishOrder(ctx context.Context, tx *sqlx.Tx, eventType string, o *Order) error {
	if _, err := s.events.Publish(ctx, tx, eventType, orderEventData(o)); err != nil {
		return fmt.Errorf("orders: publish %s: %w", eventType, err)
	}
	return nil
}

func (s *Service) publishRefund(ctx context.Context, tx *sqlx.Tx, eventType string, o *Order, r *StoredRefund) error {
	if _, err := s.events.Publish(ctx, tx, eventType, refundEventData(o, r)); err != nil {
		return fmt.Errorf("orders: publish %s: %w", eventType, err)
	}
	return nil
}

// mismatches compares what the platform reports with the order. AppID and
// MchID are compared when the platform reported them (the notification's
// signature already ties it to the merchant's key); the out_trade_no
// always; the amount and currency when the platform says money moved.
func mismatches(a *App, o *Order, t *Transaction) map[string]any {
	m := map[string]any{}
	if t.AppID != "" && t.AppID != a.AppID {
		m["app_id"] = map[string]any{"expected": a.AppID, "got": t.AppID}
	}
	if t.MchID != "" && a.MchID != "" && t.MchID != a.MchID {
		m["mch_id"] = map[string]any{"expected": a.MchID, "got": t.MchID}
	}
	if t.OutTradeNo != o.OutTradeNo {
		m["out_trade_no"] = map[string]any{"expected": o.OutTradeNo, "got": t.OutTradeNo}
	}
	if t.State == PaymentPaid || t.State == PaymentRefunded {
		if t.Amount != o.Amount {
			m["amount"] = map[string]any{"expected": o.Amount, "got": t.Amount}
		}
		cur := t.Currency
		if cur == "" {
			cur = "CNY" // Alipay trades are in CNY and do not say so
		}
		if cur != o.Currency {
			m["currency"] = map[string]any{"expected": o.Currency, "got": t.Currency}
		}
	}
	return m
}

// applyTransaction applies the platform's view of a payment to o, which
// the caller has locked in tx. A report that does not match the order
// never moves it: the order is flagged for review instead.
func (s *Service) applyTransaction(ctx context.Context, tx *sqlx.Tx, a *App, o *Order, t *Transaction, src Source, detail map[string]any) (*Order, error) {
	if t.State == PaymentPending {
		return o, nil
	}
	if mm := mismatches(a, o, t); len(mm) > 0 {
		d := maps.Clone(detail)
		if d == nil {
			d = map[string]any{}
		}
		d["mismatch"], d["platform_state"] = mm, string(t.State)
		return s.flag(ctx, tx, o, src, "mismatch", d)
	}
	switch t.State {
	case PaymentPaid, PaymentRefunded:
		switch {
		case o.Status.Unpaid():
			return s.markPaid(ctx, tx, o, t, src, detail)
		case o.Status.PaidOrLater():
			return o, nil
		default:
			// Money arrived for an order minigate closed or saw fail. A
			// local close follows a confirmed platform close, so this
			// means the platform changed its mind: an operator decides
			// (refund or honour); the order does not move backwards.
			d := maps.Clone(detail)
			if d == nil {
				d = map[string]any{}
			}
			d["transaction_id"] = t.TransactionID
			return s.flag(ctx, tx, o, src, "paid_after_"+string(o.Status), d)
		}
	case PaymentClosed:
		if !o.Status.Unpaid() {
			return o, nil // e.g. Alipay's TRADE_CLOSED after a full refund
		}
		moved, err := s.mustMove(ctx, tx, o, StatusClosed, src, moveOpts{detail: detail})
		if err != nil {
			return nil, err
		}
		return moved, s.publishOrder(ctx, tx, EventOrderClosed, moved)
	case PaymentFailed:
		if !o.Status.Unpaid() {
			return o, nil
		}
		if o.Status == StatusCreated {
			var err error
			if o, err = s.mustMove(ctx, tx, o, StatusPaying, src, moveOpts{detail: map[string]any{"implied_by": string(StatusFailed)}}); err != nil {
				return nil, err
			}
		}
		moved, err := s.mustMove(ctx, tx, o, StatusFailed, src, moveOpts{detail: detail})
		if err != nil {
			return nil, err
		}
		return moved, s.publishOrder(ctx, tx, EventOrderFailed, moved)
	}
	return o, nil
}

func (s *Service) markPaid(ctx context.Context, tx *sqlx.Tx, o *Order, t *Transaction, src Source, detail map[string]any) (*Order, error) {
	paidAt := t.PaidAt
	if paidAt.IsZero() {
		paidAt = s.now()
	}
	var err error
	if o.Status == StatusCreated {
		if o, err = s.mustMove(ctx, tx, o, StatusPaying, src, moveOpts{detail: map[string]any{"implied_by": string(StatusPaid)}}); err != nil {
			return nil, err
		}
	}
	d := maps.Clone(detail)
	if d == nil {
		d = map[string]any{}
	}
	d["transaction_id"] = t.TransactionID
	moved, err := s.mustMove(ctx, tx, o, StatusPaid, src, moveOpts{transactionID: t.TransactionID, paidAt: &paidAt, detail: d})
	if err != nil {
		return nil, err
	}
	return moved, s.publishOrder(ctx, tx, EventOrderPaid, moved)
}

// applyRefund applies the platform's view of a refund. The order is locked
// before the refund, as everywhere.
func (s *Service) applyRefund(ctx context.Context, tx *sqlx.Tx, a *App, r *Refund, src Source, failure string, detail map[string]any) error {
	found, err := getRefund(ctx, tx, RefundGetByOutRefundNo, a.ID, r.OutRefundNo)
	if errors.Is(err, ErrNotFound) {
		o, err := getOrder(ctx, tx, OrderGetByOutTradeNoForUpdate, a.ID, r.OutTradeNo)
		if errors.Is(err, ErrNotFound) {
			return webhooks.Reject(RejectUnknownOrder, "no order with this out_trade_no")
		}
		if err != nil {
			return err
		}
		// A refund minigate did not make (e.g. from the merchant console).
		d := maps.Clone(detail)
		if d == nil {
			d = map[string]any{}
		}
		d["out_refund_no"], d["amount"], d["refund_state"] = r.OutRefundNo, r.Amount, string(r.State)
		_, err = s.flag(ctx, tx, o, src, "unknown_refund", d)
		return err
	}
	if err != nil {
		return err
	}
	o, err := getOrder(ctx, tx, OrderGetForUpdate, found.OrderID)
	if err != nil {
		return err
	}
	sr, err := getRefund(ctx, tx, RefundGetForUpdate, found.ID)
	if err != nil {
		return err
	}
	d := maps.Clone(detail)
	if d == nil {
		d = map[string]any{}
	}
	d["refund_id"], d["out_refund_no"], d["amount"] = sr.ID, sr.OutRefundNo, sr.Amount
	if (r.OutTradeNo != "" && r.OutTradeNo != o.OutTradeNo) || (r.Amount != 0 && r.Amount != sr.Amount) ||
		(r.Total != 0 && r.Total != o.Amount) {
		d["mismatch"] = map[string]any{"out_trade_no": r.OutTradeNo, "refund_amount": r.Amount, "total": r.Total}
		_, err := s.flag(ctx, tx, o, src, "refund_mismatch", d)
		return err
	}
	now := s.now()
	switch r.State {
	case RefundSucceeded:
		if sr.Status == RefundStatusSucceeded {
			return nil
		}
		if sr.Status == RefundStatusFailed {
			_, err := s.flag(ctx, tx, o, src, "refund_succeeded_after_failure", d)
			return err
		}
		at := r.SucceededAt
		if at.IsZero() {
			at = now
		}
		done, ok, err := setRefundStatusIfPending(ctx, tx, sr.ID, RefundStatusSucceeded, r.RefundID, "", &at, now)
		if err != nil || !ok {
			return err
		}
		moved, ok, err := addRefunded(ctx, tx, o.ID, sr.Amount, now)
		if err != nil {
			return err
		}
		if !ok {
			// Reservations keep refunds within the paid amount of a paid
			// order, so this is not expected; keep the platform's word
			// and ask a human.
			_, err := s.flag(ctx, tx, o, src, "refund_not_applicable", d)
			return err
		}
		row := timelineRow{OrderID: o.ID, Kind: KindRefundSucceeded, From: o.Status, To: moved.Status, Source: src, Detail: d}
		if err := insertTimeline(ctx, tx, row, now); err != nil {
			return err
		}
		return s.publishRefund(ctx, tx, EventRefundSucceeded, moved, done)
	case RefundFailed:
		if sr.Status == RefundStatusFailed {
			return nil
		}
		if sr.Status == RefundStatusSucceeded {
			_, err := s.flag(ctx, tx, o, src, "refund_failed_after_success", d)
			return err
		}
		if failure == "" {
			failure = "the platform reports the refund failed"
		}
		done, ok, err := setRefundStatusIfPending(ctx, tx, sr.ID, RefundStatusFailed, r.RefundID, failure, nil, now)
		if err != nil || !ok {
			return err
		}
		d["failure"] = failure
		if err := insertTimeline(ctx, tx, timelineRow{OrderID: o.ID, Kind: KindRefundFailed, Source: src, Detail: d}, now); err != nil {
			return err
		}
		return s.publishRefund(ctx, tx, EventRefundFailed, o, done)
	case RefundPending:
		if r.RefundID != "" && sr.PlatformRefundID == "" {
			_, err := releaseRefund(ctx, tx, sr.ID, r.RefundID, now)
			return err
		}
	}
	return nil
}

// ReceivePayment implements webhooks.PaymentSink: it applies a verified
// payment or refund notification inside the transaction that stores it, so
// the state move, its timeline row, its event and the stored callback
// commit together. A genuine notification for an order this app never
// created is refused (RejectUnknownOrder).
func (s *Service) ReceivePayment(ctx context.Context, tx *sqlx.Tx, cb webhooks.Callback, n *Notification) error {
	a, ok := s.apps[cb.App]
	if !ok || a.Payments == nil {
		return fmt.Errorf("orders: payment notification for app %q, which has no payment channel", cb.App)
	}
	detail := map[string]any{"callback_id": cb.ID, "event_type": cb.EventType}
	switch {
	case n.Kind == NotifyPayment && n.Transaction != nil:
		o, err := getOrder(ctx, tx, OrderGetByOutTradeNoForUpdate, a.ID, n.Transaction.OutTradeNo)
		if errors.Is(err, ErrNotFound) {
			return webhooks.Reject(RejectUnknownOrder, "no order with this out_trade_no")
		}
		if err != nil {
			return err
		}
		_, err = s.applyTransaction(ctx, tx, a, o, n.Transaction, SourceNotify, detail)
		return err
	case n.Kind == NotifyRefund && n.Refund != nil:
		return s.applyRefund(ctx, tx, a, n.Refund, SourceNotify, cb.EventType, detail)
	}
	return webhooks.Reject(webhooks.RejectUnsupported, "notification of kind %q without its payload", n.Kind)
}
