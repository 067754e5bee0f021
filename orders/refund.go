package orders

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/ids"
)

// RefundCreate is the body of POST /v1/orders/{id}/refunds, validated.
type RefundCreate struct {
	Amount int64  `json:"amount"` // fen
	Reason string `json:"reason,omitempty"`
}

// maxReasonRunes is WeChat Pay's limit for a refund reason.
const maxReasonRunes = 80

func (r *RefundCreate) validate() error {
	if r.Amount <= 0 || r.Amount > MaxAmount {
		return invalid("amount", fmt.Sprintf("amount must be an integer number of fen from 1 to %d", MaxAmount))
	}
	if !cleanText(r.Reason) || utf8.RuneCountInString(r.Reason) > maxReasonRunes {
		return invalid("reason", fmt.Sprintf("reason must be at most %d characters of text", maxReasonRunes))
	}
	return nil
}

func (r *RefundCreate) hash() string {
	raw, _ := json.Marshal(r) // an int and a string always encode
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// RefundResult is what CreateRefund did.
type RefundResult struct {
	Refund *StoredRefund
	// Replayed is true when the Idempotency-Key had been used with this
	// request before.
	Replayed bool
}

// CreateRefund reserves a refund of a paid order, within what has not been
// refunded or reserved yet, then asks the platform. Partial and repeated
// refunds are allowed up to the paid amount. A platform that cannot be
// reached leaves the refund pending (the recovery sweep finishes it); a
// platform that refuses it marks it failed and the error says why.
func (s *Service) CreateRefund(ctx context.Context, orderID, key string, req RefundCreate) (*RefundResult, error) {
	o, a, err := s.orderWithApp(ctx, orderID)
	if err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	scope, hash := "refunds.create:"+o.ID, req.hash()
	now := s.now()
	refID := ids.New("ref")
	res := &RefundResult{}
	err = s.inTx(ctx, func(tx *sqlx.Tx) error {
		// The order lock serializes refunds of one order, so reservations
		// cannot overshoot.
		lo, err := getOrder(ctx, tx, OrderGetForUpdate, o.ID)
		if err != nil {
			return err
		}
		fresh, err := insertIdempotencyKey(ctx, tx, scope, key, hash, refID, now)
		if err != nil {
			return err
		}
		if !fresh {
			id, err := replayedResource(ctx, tx, scope, key, hash)
			if err != nil {
				return err
			}
			res.Replayed = true
			res.Refund, err = getRefund(ctx, tx, RefundGet, id)
			return err
		}
		if lo.Status != StatusPaid && lo.Status != StatusPartiallyRefunded {
			if lo.Status == StatusRefunded {
				return errRefundExceeds.WithDetail("refundable", 0)
			}
			return errNotRefundable
		}
		reserved, err := reservedRefundTotal(ctx, tx, lo.ID)
		if err != nil {
			return err
		}
		if reserved+req.Amount > lo.Amount {
			return errRefundExceeds.WithDetail("refundable", lo.Amount-reserved)
		}
		res.Refund, err = insertRefund(ctx, tx, newRefund{
			ID: refID, OrderID: lo.ID, App: lo.App,
			OutRefundNo: "RF" + strings.TrimPrefix(refID, "ref_"), // 28 of [0-9A-Z]
			Amount:      req.Amount, Reason: req.Reason,
			ClaimUntil: s.claimUntil(now), NextCheck: s.firstCheck(now), Now: now,
		})
		if err != nil {
			return err
		}
		o = lo
		return insertTimeline(ctx, tx, timelineRow{
			OrderID: lo.ID, Kind: KindRefundRequested, Source: SourceAPI,
			Detail: map[string]any{"refund_id": refID, "out_refund_no": res.Refund.OutRefundNo, "amount": req.Amount},
		}, now)
	})
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		if res.Refund.Status == RefundStatusPending && res.Refund.PlatformRefundID == "" {
			// The first attempt may not have reached the platform: send it
			// again (the same out_refund_no refunds at most once).
			claimed, err := claimRefund(ctx, s.db, res.Refund.ID, s.claimUntil(s.now()), s.now())
			if errors.Is(err, ErrNotFound) {
				return res, nil // in flight elsewhere, or finished meanwhile
			}
			if err != nil {
				return nil, err
			}
			if res.Refund, err = s.sendRefund(ctx, a, o, claimed); err != nil {
				return nil, err
			}
		}
		return res, nil
	}
	if res.Refund, err = s.sendRefund(ctx, a, o, res.Refund); err != nil {
		return nil, err
	}
	return res, nil
}

// definitive reports whether a failed refund call certainly did not refund:
// the platform refused it. Anything else (no answer, busy, a garbled
// answer) may have refunded and stays pending for the sweep to query.
func definitive(err error) bool {
	pe, ok := adapters.AsPlatformError(err)
	if !ok {
		return false
	}
	switch pe.Reason {
	case adapters.ReasonInvalidRequest, adapters.ReasonRejected, adapters.ReasonConflict,
		adapters.ReasonNotFound, adapters.ReasonAuth:
		return true
	}
	return false
}

// sendRefund asks the platform to refund a claimed pending refund and
// applies its answer.
func (s *Service) sendRefund(ctx context.Context, a *App, o *Order, sr *StoredRefund) (*StoredRefund, error) {
	res, err := a.Payments.Refund(ctx, RefundRequest{
		OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID, OutRefundNo: sr.OutRefundNo,
		Amount: sr.Amount, Total: o.Amount, Reason: sr.Reason, NotifyURL: a.NotifyURL,
	})
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	switch {
	case err != nil && !definitive(err):
		s.log.Warn("orders: refund call failed; left pending for the sweep", "refund_id", sr.ID, "err", err)
		return releaseRefund(wctx, s.db, sr.ID, "", s.now())
	case err != nil:
		detail := platformDetail(err)
		failure := fmt.Sprint(detail["reason"])
		if code, ok := detail["code"]; ok {
			failure += ": " + fmt.Sprint(code)
		}
		aerr := s.inTx(wctx, func(tx *sqlx.Tx) error {
			return s.applyRefund(wctx, tx, a, &Refund{OutTradeNo: o.OutTradeNo, OutRefundNo: sr.OutRefundNo, State: RefundFailed}, SourceAPI, failure, detail)
		})
		if aerr != nil {
			return nil, aerr
		}
		ae, _ := apperr.As(adapters.ToAppError(err))
		if ae == nil {
			return nil, fmt.Errorf("orders: refund %s: %w", sr.ID, err)
		}
		return nil, ae.WithDetail("refund_id", sr.ID)
	}
	if res.OutRefundNo == "" {
		res.OutRefundNo = sr.OutRefundNo
	}
	if res.OutTradeNo == "" {
		res.OutTradeNo = o.OutTradeNo
	}
	err = s.inTx(wctx, func(tx *sqlx.Tx) error {
		return s.applyRefund(wctx, tx, a, &res, SourceAPI, "", nil)
	})
	if err != nil {
		return nil, err
	}
	if res.State == RefundPending {
		return releaseRefund(wctx, s.db, sr.ID, res.RefundID, s.now())
	}
	return getRefund(wctx, s.db, RefundGet, sr.ID)
}

// syncRefund queries a pending refund and applies the answer; a refund the
// platform never received is sent again.
func (s *Service) syncRefund(ctx context.Context, a *App, o *Order, sr *StoredRefund) error {
	res, err := a.Payments.QueryRefund(ctx, o.OutTradeNo, sr.OutRefundNo)
	if adapters.HasReason(err, adapters.ReasonNotFound) && sr.PlatformRefundID == "" {
		claimed, err := claimRefund(ctx, s.db, sr.ID, s.claimUntil(s.now()), s.now())
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = s.sendRefund(ctx, a, o, claimed)
		return err
	}
	if err != nil {
		return fmt.Errorf("orders: query refund %s: %w", sr.ID, adapters.ToAppError(err))
	}
	if res.OutRefundNo == "" {
		res.OutRefundNo = sr.OutRefundNo
	}
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		return s.applyRefund(ctx, tx, a, &res, SourceQuery, "", map[string]any{"refund_state": string(res.State)})
	})
}
