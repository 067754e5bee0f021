package alipay

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/smartwalle/alipay/v3"
	"github.com/smartwalle/nsign"

	"github.com/minigate/minigate/internal/money"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

// maxFormBytes bounds a notification form; Alipay's are a few KiB.
const maxFormBytes = 64 << 10

// notifyTypeTrade is the notify_type of trade notifications.
const notifyTypeTrade = "trade_status_sync"

// readForm reads a notification: a POST whose body is a URL-encoded form in
// UTF-8, every parameter given once.
func readForm(req webhooks.Request) (url.Values, error) {
	if req.Method != "" && req.Method != http.MethodPost {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "method %s, want POST", req.Method)
	}
	if len(req.Body) == 0 {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "empty body")
	}
	if len(req.Body) > maxFormBytes {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "body of %d bytes", len(req.Body))
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "content type %q, want a form", ct)
		}
	}
	vs, err := url.ParseQuery(string(req.Body))
	if err != nil {
		return nil, webhooks.Reject(webhooks.RejectMalformed, "body is not a form: %v", err)
	}
	for k, v := range vs {
		if len(v) != 1 {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "parameter %q given %d times", k, len(v))
		}
	}
	if cs := vs.Get("charset"); cs != "" && !strings.EqualFold(cs, "utf-8") {
		return nil, webhooks.Reject(webhooks.RejectUnsupported, "charset %q (minigate asks Alipay for utf-8)", cs)
	}
	return vs, nil
}

// formVerifier checks Alipay's RSA2 signatures on notification forms.
// keys returns the keys a form may be signed with: sn is the form's
// alipay_cert_sn ("" when it has none).
type formVerifier struct {
	keys func(ctx context.Context, sn string) ([]*rsa.PublicKey, error)
}

// keyFormVerifier verifies with the Alipay public key (public-key mode).
func keyFormVerifier(pub *rsa.PublicKey) formVerifier {
	return formVerifier{keys: func(_ context.Context, sn string) ([]*rsa.PublicKey, error) {
		if sn != "" {
			return nil, webhooks.Reject(webhooks.RejectUnsupported, "certificate-mode notification (alipay_cert_sn) for a public-key-mode app")
		}
		return []*rsa.PublicKey{pub}, nil
	}}
}

// certFormVerifier verifies with the Alipay certificates the store trusts
// (certificate mode): the one alipay_cert_sn names (downloaded if need
// be), or, without alipay_cert_sn, each in turn.
func certFormVerifier(store *certStore) formVerifier {
	return formVerifier{keys: func(ctx context.Context, sn string) ([]*rsa.PublicKey, error) {
		if sn == "" {
			return store.keys(), nil
		}
		k, ok := store.ensure(ctx, sn)
		if !ok {
			return nil, webhooks.Reject(webhooks.RejectBadSignature, "alipay_cert_sn %q names no Alipay certificate minigate trusts", sn)
		}
		return []*rsa.PublicKey{k}, nil
	}}
}

// verify checks vs's sign before anything else in vs is trusted. The
// signed content is the sorted non-empty parameters except sign and
// sign_type; with alsoWithSignType, content that includes sign_type is
// accepted too (Alipay signs message-service notifications that way).
// A form with alipay_cert_sn is verified with that certificate, over
// content with alipay_cert_sn (Alipay's documented rule: only sign and
// sign_type are left out) or without it (smartwalle's rule). Empty
// parameters are dropped first: Alipay does not sign them, while the
// SDK's encoder would include them.
func (f formVerifier) verify(ctx context.Context, vs url.Values, alsoWithSignType bool) error {
	sign := vs.Get("sign")
	switch {
	case sign == "":
		return webhooks.Reject(webhooks.RejectMissingSignature, "no sign parameter")
	case vs.Get("sign_type") != "RSA2":
		return webhooks.Reject(webhooks.RejectUnsupported, "sign_type %q, want RSA2", vs.Get("sign_type"))
	}
	raw, err := base64.StdEncoding.DecodeString(sign)
	if err != nil {
		return webhooks.Reject(webhooks.RejectBadSignature, "sign is not base64")
	}
	sn := vs.Get("alipay_cert_sn")
	keys, err := f.keys(ctx, sn)
	if err != nil {
		return err
	}
	signed := url.Values{}
	for k, v := range vs {
		if v[0] != "" {
			signed[k] = v
		}
	}
	ignores := [][]string{{"sign", "sign_type"}}
	if alsoWithSignType {
		ignores = append(ignores, []string{"sign"})
	}
	if sn != "" {
		for _, ig := range ignores {
			ignores = append(ignores, append(ig[:len(ig):len(ig)], "alipay_cert_sn"))
		}
	}
	for _, k := range keys {
		v := nsign.New(nsign.WithMethod(nsign.NewRSAMethod(crypto.SHA256, nil, k)), nsign.WithEncoder(alipay.Encoder{}))
		for _, ig := range ignores {
			if v.VerifyValues(signed, raw, nsign.WithIgnore(ig...)) == nil {
				return nil
			}
		}
	}
	if sn != "" {
		return webhooks.Reject(webhooks.RejectBadSignature, "sign does not verify with the Alipay certificate %s", sn)
	}
	return webhooks.Reject(webhooks.RejectBadSignature, "sign does not verify with the Alipay public key")
}

// ParseNotification verifies and reads an Alipay async notification
// (trade_status_sync, a form POST). The RSA2 signature is checked with the
// Alipay public key before anything else; then the app and, when
// pay.seller_id is configured, the seller; then the fields.
//
// A notification with gmt_refund, out_biz_no or a positive refund_fee is a
// refund (OutRefundNo = out_biz_no, Alipay's echo of out_request_no; its
// Amount is 0 because Alipay reports only the cumulative refund_fee).
// Otherwise it is a payment: TRADE_SUCCESS and TRADE_FINISHED paid,
// WAIT_BUYER_PAY pending, TRADE_CLOSED closed.
//
// The de-duplication key is notify_id|trade_status (|out_biz_no for refunds): Alipay keeps
// notify_id across retries of one notification, and a later notification
// about the same trade (TRADE_FINISHED after TRADE_SUCCESS, each refund)
// stays distinct even if Alipay reused its notify_id.
func (p *Pay) ParseNotification(ctx context.Context, req webhooks.Request) (webhooks.Opened[*orders.Notification], error) {
	var none webhooks.Opened[*orders.Notification]
	vs, err := readForm(req)
	if err != nil {
		return none, err
	}
	if err := p.verifier.verify(ctx, vs, false); err != nil {
		return none, err
	}
	switch {
	case vs.Get("app_id") != p.appID:
		return none, webhooks.Reject(webhooks.RejectForeignApp, "app_id %q", vs.Get("app_id"))
	case p.sellerID != "" && vs.Get("seller_id") != p.sellerID:
		return none, webhooks.Reject(webhooks.RejectForeignMerchant, "seller_id %q", vs.Get("seller_id"))
	case vs.Get("notify_type") != "" && vs.Get("notify_type") != notifyTypeTrade:
		return none, webhooks.Reject(webhooks.RejectUnsupported, "notify_type %q", vs.Get("notify_type"))
	}
	for _, k := range []string{"notify_id", "trade_status", "out_trade_no", "trade_no", "total_amount"} {
		if vs.Get(k) == "" {
			return none, webhooks.Reject(webhooks.RejectMalformed, "missing %s", k)
		}
	}
	total, err := money.ParseYuan(vs.Get("total_amount"))
	if err != nil {
		return none, webhooks.Reject(webhooks.RejectMalformed, "total_amount: %v", err)
	}
	var refundFee int64
	if rf := vs.Get("refund_fee"); rf != "" {
		if refundFee, err = money.ParseYuan(rf); err != nil {
			return none, webhooks.Reject(webhooks.RejectMalformed, "refund_fee: %v", err)
		}
	}
	status := vs.Get("trade_status")
	n := webhooks.Opened[*orders.Notification]{
		DedupKey:  vs.Get("notify_id") + "|" + status,
		EventType: notifyTypeTrade + "/" + status,
		Summary: map[string]any{
			"notify_type": notifyTypeTrade, "trade_status": status, "app_id": vs.Get("app_id"),
			"seller_id": vs.Get("seller_id"), "out_trade_no": vs.Get("out_trade_no"),
			"trade_no": vs.Get("trade_no"), "total_amount": total,
		},
	}
	if vs.Get("gmt_refund") != "" || vs.Get("out_biz_no") != "" || refundFee > 0 {
		ref, err := refundFromForm(vs, total)
		if err != nil {
			return none, err
		}
		n.Payload = &orders.Notification{Kind: orders.NotifyRefund, Refund: ref}
		n.DedupKey += "|" + ref.OutRefundNo
		n.Summary["refund_fee"], n.Summary["out_biz_no"] = refundFee, ref.OutRefundNo
		return n, nil
	}
	tx, err := transactionFromForm(vs, total)
	if err != nil {
		return none, err
	}
	n.Payload = &orders.Notification{Kind: orders.NotifyPayment, Transaction: tx}
	return n, nil
}

func refundFromForm(vs url.Values, total int64) (*orders.Refund, error) {
	ref := &orders.Refund{
		OutTradeNo: vs.Get("out_trade_no"), TransactionID: vs.Get("trade_no"),
		OutRefundNo: vs.Get("out_biz_no"), State: orders.RefundSucceeded, Total: total,
	}
	if ref.OutRefundNo == "" {
		// A refund requested without out_request_no uses the out_trade_no.
		ref.OutRefundNo = ref.OutTradeNo
	}
	if g := vs.Get("gmt_refund"); g != "" {
		at, err := parseTime(g)
		if err != nil {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "gmt_refund %q", g)
		}
		ref.SucceededAt = at
	}
	return ref, nil
}

func transactionFromForm(vs url.Values, total int64) (*orders.Transaction, error) {
	tx := &orders.Transaction{
		AppID: vs.Get("app_id"), MchID: vs.Get("seller_id"), OutTradeNo: vs.Get("out_trade_no"),
		TransactionID: vs.Get("trade_no"), Amount: total, Currency: "CNY", PayerID: vs.Get("buyer_open_id"),
	}
	if c := vs.Get("trans_currency"); c != "" {
		tx.Currency = c
	}
	if tx.PayerID == "" {
		tx.PayerID = vs.Get("buyer_id")
	}
	switch vs.Get("trade_status") {
	case string(alipay.TradeStatusSuccess), string(alipay.TradeStatusFinished):
		tx.State = orders.PaymentPaid
	case string(alipay.TradeStatusWaitBuyerPay):
		tx.State = orders.PaymentPending
	case string(alipay.TradeStatusClosed):
		tx.State = orders.PaymentClosed
	default:
		return nil, webhooks.Reject(webhooks.RejectMalformed, "trade_status %q", vs.Get("trade_status"))
	}
	if g := vs.Get("gmt_payment"); g != "" {
		at, err := parseTime(g)
		if err != nil {
			return nil, webhooks.Reject(webhooks.RejectMalformed, "gmt_payment %q", g)
		}
		tx.PaidAt = at
	}
	return tx, nil
}
