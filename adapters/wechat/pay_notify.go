package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"

	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

// WeChat Pay notification headers.
const (
	payHeaderTimestamp = "Wechatpay-Timestamp"
	payHeaderNonce     = "Wechatpay-Nonce"
	payHeaderSignature = "Wechatpay-Signature"
	payHeaderSerial    = "Wechatpay-Serial"
)

// payRefundNotice is the plaintext of a REFUND.* notification.
type payRefundNotice struct {
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	OutRefundNo   string `json:"out_refund_no"`
	RefundID      string `json:"refund_id"`
	RefundStatus  string `json:"refund_status"`
	SuccessTime   string `json:"success_time"`
	Amount        struct {
		Total  int64 `json:"total"`
		Refund int64 `json:"refund"`
	} `json:"amount"`
}

// payNotice is a verified notification as the callback pipeline takes it:
// its identity (the notification id, which WeChat Pay keeps across
// retries; the event type; a summary) and the order or refund it reports.
type payNotice = webhooks.Opened[*orders.Notification]

// payResourceNonceSize is the length of an AEAD_AES_256_GCM resource's
// nonce: the standard GCM nonce.
const payResourceNonceSize = 12

// ParseNotification verifies and opens a WeChat Pay notification, in this
// order: the Wechatpay-* headers are present; the timestamp is within the
// callback window; the serial names a key this merchant has (the public key
// id, or a platform certificate — downloaded if new); the body is a
// notification envelope; then wechatpay-go's notify handler checks the
// signature and decrypts the AES-256-GCM resource with the APIv3 key.
// TRANSACTION.SUCCESS is a payment notification; REFUND.SUCCESS,
// REFUND.ABNORMAL and REFUND.CLOSED are refund notifications. Anything that
// fails is a *webhooks.VerifyError; verified notifications of other types
// are rejected as unsupported. The merchant and app ids inside are returned
// as sent, for the caller to compare with its own. (wechatpay-go also
// enforces its own fixed 5-minute window against the system clock, so a
// callback window beyond 5 minutes has no effect.)
func (p *Pay) ParseNotification(ctx context.Context, req webhooks.Request) (payNotice, error) {
	h := req.Header
	for _, k := range []string{payHeaderSignature, payHeaderSerial, payHeaderTimestamp, payHeaderNonce} {
		if strings.TrimSpace(h.Get(k)) == "" {
			return payNotice{}, webhooks.Reject(webhooks.RejectMissingSignature, "no %s header", k)
		}
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(h.Get(payHeaderTimestamp)), 10, 64)
	if err != nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "%s is not a unix time", payHeaderTimestamp)
	}
	if skew := p.now().Sub(time.Unix(ts, 0)).Abs(); skew >= p.window {
		return payNotice{}, webhooks.Reject(webhooks.RejectStaleTimestamp, "timestamp %d is %s from now", ts, skew.Round(time.Second))
	}
	serial := strings.TrimSpace(h.Get(payHeaderSerial))
	if !p.knowsSerial(ctx, serial) {
		return payNotice{}, webhooks.Reject(webhooks.RejectBadSignature, "unknown serial %q", serial)
	}
	var envelope notify.Request
	if err := json.Unmarshal(req.Body, &envelope); err != nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "body is not a notification: %v", err)
	}
	if envelope.ID == "" || envelope.Resource == nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "notification without id or resource")
	}
	// wechatpay-go hands the nonce to AES-GCM as it is, and the standard
	// library panics on a nonce that is not 12 bytes long.
	if n := len(envelope.Resource.Nonce); n != payResourceNonceSize {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "resource nonce of %d bytes, want %d", n, payResourceNonceSize)
	}

	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, "/", bytes.NewReader(req.Body))
	if err != nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "request: %v", err)
	}
	httpReq.Header = h.Clone()
	var plaintext json.RawMessage
	parsed, err := p.notify.ParseNotifyRequest(ctx, httpReq, &plaintext)
	switch {
	case err != nil && parsed == nil:
		// The SDK's own error text quotes the whole request: keep it out.
		return payNotice{}, webhooks.Reject(webhooks.RejectBadSignature, "signature does not verify with serial %q", serial)
	case err != nil && parsed.Resource.Plaintext == "":
		return payNotice{}, webhooks.Reject(webhooks.RejectBadCiphertext, "resource does not decrypt with the APIv3 key")
	case err != nil:
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "decrypted resource is not JSON")
	}
	switch {
	case parsed.EventType == "TRANSACTION.SUCCESS":
		return p.paymentNotification(parsed, plaintext)
	case strings.HasPrefix(parsed.EventType, "REFUND."):
		return p.refundNotification(parsed, plaintext)
	}
	return payNotice{}, webhooks.Reject(webhooks.RejectUnsupported, "event_type %q", parsed.EventType)
}

// knowsSerial reports whether serial names the configured public key or a
// platform certificate.
func (p *Pay) knowsSerial(ctx context.Context, serial string) bool {
	if p.publicKeyID != "" && serial == p.publicKeyID {
		return true
	}
	_, ok := p.certs.Get(ctx, serial)
	return ok
}

func (p *Pay) paymentNotification(n *notify.Request, plaintext []byte) (payNotice, error) {
	var t payments.Transaction
	if err := json.Unmarshal(plaintext, &t); err != nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "transaction: %v", err)
	}
	tx, err := payTransaction(&t)
	if err != nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "transaction: %v", err)
	}
	return payNotice{
		DedupKey: n.ID, EventType: n.EventType,
		Payload: &orders.Notification{Kind: orders.NotifyPayment, Transaction: &tx},
		Summary: map[string]any{
			"event_type": n.EventType, "appid": tx.AppID, "mchid": tx.MchID,
			"out_trade_no": tx.OutTradeNo, "transaction_id": tx.TransactionID,
			"trade_state": payStr(t.TradeState), "amount": tx.Amount, "currency": tx.Currency,
		},
	}, nil
}

func (p *Pay) refundNotification(n *notify.Request, plaintext []byte) (payNotice, error) {
	var rn payRefundNotice
	if err := json.Unmarshal(plaintext, &rn); err != nil {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "refund: %v", err)
	}
	status := rn.RefundStatus
	if status == "" {
		status = strings.TrimPrefix(n.EventType, "REFUND.")
	}
	state, ok := payRefundStates[status]
	if !ok || rn.OutRefundNo == "" || rn.OutTradeNo == "" {
		return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "refund %q with status %q", rn.OutRefundNo, status)
	}
	r := orders.Refund{
		OutTradeNo: rn.OutTradeNo, TransactionID: rn.TransactionID, OutRefundNo: rn.OutRefundNo,
		RefundID: rn.RefundID, State: state, Amount: rn.Amount.Refund, Total: rn.Amount.Total,
	}
	if rn.SuccessTime != "" {
		at, err := time.Parse(time.RFC3339, rn.SuccessTime)
		if err != nil {
			return payNotice{}, webhooks.Reject(webhooks.RejectMalformed, "refund success_time %q", rn.SuccessTime)
		}
		r.SucceededAt = at
	}
	return payNotice{
		DedupKey: n.ID, EventType: n.EventType,
		Payload: &orders.Notification{Kind: orders.NotifyRefund, Refund: &r},
		Summary: map[string]any{
			"event_type": n.EventType, "mchid": rn.MchID, "out_trade_no": r.OutTradeNo,
			"out_refund_no": r.OutRefundNo, "refund_id": r.RefundID, "refund_status": status,
			"refund": r.Amount, "total": r.Total,
		},
	}, nil
}

// NotifyAck tells WeChat Pay the notification was received: 204, no body.
func (p *Pay) NotifyAck() webhooks.Reply {
	return webhooks.Reply{Status: http.StatusNoContent}
}

// NotifyNack asks WeChat Pay to retry: 500 {"code":"FAIL","message":…}.
func (p *Pay) NotifyNack(message string) webhooks.Reply {
	body, _ := json.Marshal(map[string]string{"code": "FAIL", "message": message}) // strings always encode
	return webhooks.Reply{Status: http.StatusInternalServerError, ContentType: "application/json", Body: body}
}
