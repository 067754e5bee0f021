package qq

import (
	"bytes"
	"context"
	"encoding/xml"
	"net/http"

	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

// maxNotificationBytes bounds a notification body; QQ's are well under 2 KiB.
const maxNotificationBytes = 64 << 10

// ParseNotification verifies and reads a QQ wallet payment notification:
// an XML POST signed like every QQ wallet message. The sign is checked, in
// constant time, before anything else is read; then the merchant and app,
// then the fields. Untrustworthy input is a *webhooks.VerifyError. The
// notification's de-duplication key, transaction_id + ":" + trade_state,
// is the same on every retry.
func (p *Pay) ParseNotification(_ context.Context, req webhooks.Request) (webhooks.Opened[*orders.Notification], error) {
	var none webhooks.Opened[*orders.Notification]
	if len(req.Body) == 0 {
		return none, webhooks.Reject(webhooks.RejectMalformed, "empty body")
	}
	if len(req.Body) > maxNotificationBytes {
		return none, webhooks.Reject(webhooks.RejectMalformed, "body of %d bytes", len(req.Body))
	}
	f, err := decodeXML(req.Body)
	if err != nil {
		return none, webhooks.Reject(webhooks.RejectMalformed, "%v", err)
	}
	switch {
	case f["sign"] == "":
		return none, webhooks.Reject(webhooks.RejectMissingSignature, "no sign field")
	case f["sign_type"] != "" && f["sign_type"] != "MD5":
		return none, webhooks.Reject(webhooks.RejectUnsupported, "sign_type %q", f["sign_type"])
	case !signValid(f, p.apiKey):
		return none, webhooks.Reject(webhooks.RejectBadSignature, "sign does not match the API key")
	case f["mch_id"] != p.mchID:
		return none, webhooks.Reject(webhooks.RejectForeignMerchant, "mch_id %q", f["mch_id"])
	case f["appid"] != "" && f["appid"] != p.appID:
		return none, webhooks.Reject(webhooks.RejectForeignApp, "appid %q", f["appid"])
	}
	for _, k := range []string{"out_trade_no", "transaction_id", "trade_state", "total_fee"} {
		if f[k] == "" {
			return none, webhooks.Reject(webhooks.RejectMalformed, "missing %s", k)
		}
	}
	tx, err := p.transaction(f)
	if err != nil {
		return none, webhooks.Reject(webhooks.RejectMalformed, "%v", err)
	}
	return webhooks.Opened[*orders.Notification]{
		DedupKey:  f["transaction_id"] + ":" + f["trade_state"],
		EventType: "qpay_notify/" + f["trade_state"],
		Payload:   &orders.Notification{Kind: orders.NotifyPayment, Transaction: &tx},
		Summary: map[string]any{
			"appid":          f["appid"],
			"mch_id":         f["mch_id"],
			"out_trade_no":   tx.OutTradeNo,
			"transaction_id": tx.TransactionID,
			"trade_state":    f["trade_state"],
			"total_fee":      tx.Amount,
			"fee_type":       tx.Currency,
		},
	}, nil
}

// NotifyAck is QQ wallet's "received" reply.
func (p *Pay) NotifyAck() webhooks.Reply {
	return webhooks.Reply{Status: http.StatusOK, ContentType: "text/xml; charset=utf-8",
		Body: []byte("<xml><return_code>SUCCESS</return_code></xml>")}
}

// NotifyNack asks QQ wallet to send the notification again.
func (p *Pay) NotifyNack(message string) webhooks.Reply {
	var b bytes.Buffer
	b.WriteString("<xml><return_code>FAIL</return_code><return_msg>")
	// Writes to a bytes.Buffer cannot fail.
	_ = xml.EscapeText(&b, []byte(message))
	b.WriteString("</return_msg></xml>")
	return webhooks.Reply{Status: http.StatusInternalServerError, ContentType: "text/xml; charset=utf-8", Body: b.Bytes()}
}
