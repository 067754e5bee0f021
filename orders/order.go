package orders

import (
	"encoding/json"
	"time"
)

// Status is an order's state.
type Status string

// Order states (see the package documentation for the moves between them).
const (
	StatusCreated           Status = "created"
	StatusPaying            Status = "paying"
	StatusPaid              Status = "paid"
	StatusPartiallyRefunded Status = "partially_refunded"
	StatusRefunded          Status = "refunded"
	StatusClosed            Status = "closed"
	StatusFailed            Status = "failed"
)

// Unpaid reports whether the order may still be paid or closed.
func (s Status) Unpaid() bool { return s == StatusCreated || s == StatusPaying }

// PaidOrLater reports whether money has moved for the order: paid,
// partially refunded or refunded.
func (s Status) PaidOrLater() bool {
	return s == StatusPaid || s == StatusPartiallyRefunded || s == StatusRefunded
}

// Valid reports whether s is one of the order states.
func (s Status) Valid() bool {
	switch s {
	case StatusCreated, StatusPaying, StatusPaid, StatusPartiallyRefunded, StatusRefunded, StatusClosed, StatusFailed:
		return true
	}
	return false
}

// Source says what drove a state move; it is recorded on the timeline.
type Source string

// Sources of state moves (the contract's list).
const (
	SourceNotify    Source = "notify"
	SourceQuery     Source = "query"
	SourceAPI       Source = "api"
	SourceReconcile Source = "reconcile"
)

// Timeline event kinds.
const (
	KindCreated         = "created"          // the order was stored
	KindPrepaid         = "prepaid"          // the platform accepted the order
	KindPrepayFailed    = "prepay_failed"    // the platform call failed; retryable with the same Idempotency-Key
	KindStatus          = "status"           // a state move (from_status → to_status)
	KindFlagged         = "flagged"          // needs_review was set; detail says why
	KindRefundRequested = "refund_requested" // a refund was reserved and sent to the platform
	KindRefundSucceeded = "refund_succeeded"
	KindRefundFailed    = "refund_failed"
	KindPayerErased     = "payer_pseudonymised" // the payer's user was erased; openid / Alipay user id replaced by pseudonyms
)

// Event types published to the business backend.
const (
	EventOrderPaid       = "order.paid"
	EventOrderClosed     = "order.closed"
	EventOrderFailed     = "order.failed"
	EventRefundSucceeded = "refund.succeeded"
	EventRefundFailed    = "refund.failed"
)

// Order is a stored order.
type Order struct {
	ID                 string     `db:"id" json:"id"`
	App                string     `db:"app" json:"app"`
	Platform           string     `db:"platform" json:"platform"`
	UserID             *string    `db:"user_id" json:"user_id"`
	PayerOpenID        string     `db:"payer_openid" json:"openid,omitempty"`
	PayerAlipayUserID  string     `db:"payer_alipay_user_id" json:"alipay_user_id,omitempty"`
	OutTradeNo         string     `db:"out_trade_no" json:"out_trade_no"`
	Description        string     `db:"description" json:"description"`
	Attach             string     `db:"attach" json:"attach,omitempty"`
	Amount             int64      `db:"amount" json:"amount"`
	Currency           string     `db:"currency" json:"currency"`
	Status             Status     `db:"status" json:"status"`
	NeedsReview        bool       `db:"needs_review" json:"needs_review"`
	PrepayID           string     `db:"prepay_id" json:"-"`
	StoredPayParams    []byte     `db:"pay_params" json:"-"`
	PrepayClaimedUntil *time.Time `db:"prepay_claimed_until" json:"-"`
	TransactionID      string     `db:"transaction_id" json:"transaction_id,omitempty"`
	RefundedAmount     int64      `db:"refunded_amount" json:"refunded_amount"`
	ExpiresAt          time.Time  `db:"expires_at" json:"expires_at"`
	PaidAt             *time.Time `db:"paid_at" json:"paid_at"`
	ClosedAt           *time.Time `db:"closed_at" json:"closed_at"`
	NextCheckAt        *time.Time `db:"next_check_at" json:"-"`
	CheckCount         int        `db:"check_count" json:"-"`
	CreatedAt          time.Time  `db:"created_at" json:"created_at"`
	UpdatedAt          time.Time  `db:"updated_at" json:"updated_at"`
}

// Payer returns the order's payer as the platform adapters take it.
func (o *Order) Payer() Payer {
	return Payer{OpenID: o.PayerOpenID, AlipayUserID: o.PayerAlipayUserID}
}

// TimelineEntry is one row of an order's timeline.
type TimelineEntry struct {
	ID         int64           `db:"id" json:"id"`
	OrderID    string          `db:"order_id" json:"-"`
	Kind       string          `db:"kind" json:"kind"`
	FromStatus string          `db:"from_status" json:"from_status,omitempty"`
	ToStatus   string          `db:"to_status" json:"to_status,omitempty"`
	Source     Source          `db:"source" json:"source"`
	Detail     json.RawMessage `db:"detail" json:"detail"`
	CreatedAt  time.Time       `db:"created_at" json:"created_at"`
}

// RefundStatus is a stored refund's state.
type RefundStatus string

// Refund states: pending until the platform says succeeded or failed.
const (
	RefundStatusPending   RefundStatus = "pending"
	RefundStatusSucceeded RefundStatus = "succeeded"
	RefundStatusFailed    RefundStatus = "failed"
)

// StoredRefund is a refund as minigate keeps it.
type StoredRefund struct {
	ID               string       `db:"id" json:"id"`
	OrderID          string       `db:"order_id" json:"order_id"`
	App              string       `db:"app" json:"app"`
	OutRefundNo      string       `db:"out_refund_no" json:"out_refund_no"`
	Amount           int64        `db:"amount" json:"amount"`
	Reason           string       `db:"reason" json:"reason,omitempty"`
	Status           RefundStatus `db:"status" json:"status"`
	PlatformRefundID string       `db:"platform_refund_id" json:"platform_refund_id,omitempty"`
	Failure          string       `db:"failure" json:"failure,omitempty"`
	ClaimedUntil     *time.Time   `db:"claimed_until" json:"-"`
	SucceededAt      *time.Time   `db:"succeeded_at" json:"succeeded_at"`
	NextCheckAt      *time.Time   `db:"next_check_at" json:"-"`
	CheckCount       int          `db:"check_count" json:"-"`
	CreatedAt        time.Time    `db:"created_at" json:"created_at"`
	UpdatedAt        time.Time    `db:"updated_at" json:"updated_at"`
}

// View is an order as the API shows it: the order, and depending on the
// route its fresh pay parameters, its timeline and its refunds.
type View struct {
	*Order
	PayParams PayParams       `json:"pay_params,omitempty"`
	Events    []TimelineEntry `json:"events,omitempty"`
	Refunds   []StoredRefund  `json:"refunds,omitempty"`
	Replayed  bool            `json:"-"`
}

// orderEventData is the data of order.* events.
func orderEventData(o *Order) map[string]any {
	d := map[string]any{
		"order_id":        o.ID,
		"app":             o.App,
		"platform":        o.Platform,
		"user_id":         o.UserID,
		"out_trade_no":    o.OutTradeNo,
		"amount":          o.Amount,
		"currency":        o.Currency,
		"status":          o.Status,
		"transaction_id":  o.TransactionID,
		"refunded_amount": o.RefundedAmount,
		"paid_at":         o.PaidAt,
		"closed_at":       o.ClosedAt,
	}
	if o.Attach != "" {
		d["attach"] = o.Attach
	}
	if o.PayerOpenID != "" {
		d["openid"] = o.PayerOpenID
	}
	if o.PayerAlipayUserID != "" {
		d["alipay_user_id"] = o.PayerAlipayUserID
	}
	return d
}

// refundEventData is the data of refund.* events.
func refundEventData(o *Order, r *StoredRefund) map[string]any {
	return map[string]any{
		"refund_id":          r.ID,
		"order_id":           o.ID,
		"app":                o.App,
		"out_trade_no":       o.OutTradeNo,
		"out_refund_no":      r.OutRefundNo,
		"amount":             r.Amount,
		"status":             r.Status,
		"platform_refund_id": r.PlatformRefundID,
		"failure":            r.Failure,
		"succeeded_at":       r.SucceededAt,
		"order_status":       o.Status,
		"refunded_amount":    o.RefundedAmount,
		"order_amount":       o.Amount,
	}
}
