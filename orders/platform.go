// Package orders creates unified orders, hands mini-programs the signed
// parameters for requestPayment / tradePay, and drives each order through
// its states exactly once, whatever order and however often notifications,
// queries and API calls arrive:
//
//	created → paying → paid → (partially_refunded | refunded)
//	created | paying → closed
//	paying → failed
package orders

import (
	"context"
	"time"

	"github.com/minigate/minigate/webhooks"
)

// Payer identifies who pays. WeChat and QQ need OpenID; Alipay takes
// AlipayUserID (buyer_id) or, for apps with open ids, OpenID (buyer_open_id).
type Payer struct {
	OpenID       string
	AlipayUserID string
}

// PrepayRequest asks the platform to create a payable order.
type PrepayRequest struct {
	OutTradeNo  string
	Description string
	Amount      int64 // fen
	Attach      string
	Payer       Payer
	ExpiresAt   time.Time
	NotifyURL   string
	ClientIP    string
}

// Prepay is the platform's handle for a created order: WeChat/QQ prepay_id,
// Alipay trade_no.
type Prepay struct {
	PrepayID string
}

// PayParams are the parameters a mini-program passes unchanged to
// wx.requestPayment, qq.requestPayment or my.tradePay.
type PayParams map[string]string

// PaymentState is a payment's state as the platform reports it, normalised.
type PaymentState string

// Normalised payment states.
const (
	PaymentPending  PaymentState = "pending"  // NOTPAY, USERPAYING, WAIT_BUYER_PAY
	PaymentPaid     PaymentState = "paid"     // SUCCESS, TRADE_SUCCESS, TRADE_FINISHED
	PaymentRefunded PaymentState = "refunded" // paid, then (partly) refunded: WeChat REFUND
	PaymentClosed   PaymentState = "closed"   // CLOSED, TRADE_CLOSED (unpaid), REVOKED
	PaymentFailed   PaymentState = "failed"   // PAYERROR
)

// Transaction is a payment as the platform reports it (query or notification).
type Transaction struct {
	AppID         string
	MchID         string // WeChat/QQ mch_id; Alipay seller_id
	OutTradeNo    string
	TransactionID string // WeChat transaction_id, QQ transaction_id, Alipay trade_no
	State         PaymentState
	Amount        int64  // order total in fen
	Currency      string // "CNY"
	PayerID       string // openid / buyer_id / buyer_open_id
	PaidAt        time.Time
}

// RefundRequest asks for a refund of part or all of a paid order.
type RefundRequest struct {
	OutTradeNo    string
	TransactionID string
	OutRefundNo   string
	Amount        int64 // fen, this refund
	Total         int64 // fen, the order total
	Reason        string
	NotifyURL     string
}

// RefundState is a refund's state, normalised.
type RefundState string

// Normalised refund states.
const (
	RefundPending   RefundState = "pending"   // PROCESSING, or accepted without fund change yet
	RefundSucceeded RefundState = "succeeded" // SUCCESS, fund_change=Y, REFUND_SUCCESS
	RefundFailed    RefundState = "failed"    // ABNORMAL, CLOSED
)

// Refund is a refund as the platform reports it.
type Refund struct {
	OutTradeNo    string
	TransactionID string
	OutRefundNo   string
	RefundID      string
	State         RefundState
	Amount        int64 // fen, this refund
	Total         int64 // fen, the order total (0 when not reported)
	SucceededAt   time.Time
}

// NotificationKind says what a payment-channel notification is about.
type NotificationKind string

// Notification kinds.
const (
	NotifyPayment NotificationKind = "payment"
	NotifyRefund  NotificationKind = "refund"
)

// Notification is a verified, decrypted payment or refund notification:
// the payload of the payment channel's webhooks.Opened. The adapter that
// parses it also gives the pipeline its identity there (DedupKey: WeChat
// Pay's notification id, Alipay's notify_id, QQ wallet's transaction_id +
// state; EventType: the platform's own name, such as TRANSACTION.SUCCESS or
// trade_status_sync/TRADE_SUCCESS, which reaches the timeline as the
// stored callback's event type).
type Notification struct {
	Kind        NotificationKind
	Transaction *Transaction // set for NotifyPayment
	Refund      *Refund      // set for NotifyRefund
}

// PaymentNotifications is what an adapter's pay client offers the callback
// pipeline (webhooks.Payments): payment and refund notifications opened
// into Notifications. Orders receives them through ReceivePayment.
type PaymentNotifications = webhooks.PaymentVerifier[*Notification]

// Payments is what orders asks a payment platform. Failures are
// *adapters.PlatformError (Reason not_found when the platform does not know
// the order or refund; conflict for a state conflict such as paying a
// closed order); features a platform lacks are *adapters.UnsupportedError.
type Payments interface {
	// Prepay creates the order at the platform.
	Prepay(ctx context.Context, req PrepayRequest) (Prepay, error)
	// PayParams signs fresh client parameters for a prepay handle.
	PayParams(ctx context.Context, p Prepay) (PayParams, error)
	// Query returns the platform's view of an order.
	Query(ctx context.Context, outTradeNo string) (Transaction, error)
	// Close closes an unpaid order at the platform.
	Close(ctx context.Context, outTradeNo string) error
	// Refund requests a refund; the same OutRefundNo refunds at most once.
	Refund(ctx context.Context, req RefundRequest) (Refund, error)
	// QueryRefund returns a refund's state.
	QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (Refund, error)
}
