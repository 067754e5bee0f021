package wechat_test

import (
	"context"
	"testing"

	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

// FuzzPayParseNotification feeds WeChat Pay notifications to
// ParseNotification three ways: an arbitrary body under a signature made
// for another body (must be refused: nothing unsigned is trusted); an
// arbitrary body signed with the platform key (the envelope parser at work);
// and an arbitrary resource plaintext and event type, encrypted with the
// APIv3 key and signed (the transaction and refund parsers at work). It
// must never panic, every refusal is a *webhooks.VerifyError, and what it
// accepts is a payment or refund with the ids the pipeline needs.
func FuzzPayParseNotification(f *testing.F) {
	e := paySetup(f, sandbox.KeyModePublicKey, nil)
	tx := `{"appid":"wx1","mchid":"1900000001","out_trade_no":"MG1","transaction_id":"42000001","trade_type":"JSAPI",` +
		`"trade_state":"SUCCESS","trade_state_desc":"ok","bank_type":"OTHERS","attach":"","success_time":"2024-05-01T10:00:00+08:00",` +
		`"payer":{"openid":"o1"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`
	refund := `{"mchid":"1900000001","out_trade_no":"MG1","transaction_id":"42000001","out_refund_no":"R1","refund_id":"50001",` +
		`"refund_status":"SUCCESS","success_time":"2024-05-01T11:00:00+08:00","amount":{"total":100,"refund":10,"payer_total":100,"payer_refund":10}}`
	for _, seed := range []struct{ body, plaintext, eventType string }{
		{`{"id":"EV-1","resource":{"ciphertext":"AAAA","nonce":"000000000000","associated_data":"transaction","algorithm":"AEAD_AES_256_GCM"}}`, tx, "TRANSACTION.SUCCESS"},
		{`{}`, refund, "REFUND.SUCCESS"},
		{`not json`, refund, "REFUND.ABNORMAL"},
		{`{"id":"","resource":null}`, `{"trade_state":"SUCCESS"}`, "TRANSACTION.SUCCESS"},
		{`[1,2,3]`, `{"out_refund_no":"R1","out_trade_no":"MG1","refund_status":"WHATEVER"}`, "REFUND.CLOSED"},
		{`{"id":"EV-2","resource":{}}`, `null`, "TRANSACTION.CLOSED"},
		{`{"id":"EV-3"}`, `{"amount":{"total":-1},"success_time":"yesterday"}`, "TRANSACTION.SUCCESS"},
	} {
		f.Add([]byte(seed.body), []byte(seed.plaintext), seed.eventType)
	}
	ctx := context.Background()
	check := func(t *testing.T, how string, n webhooks.Opened[*orders.Notification], err error) {
		if err != nil {
			if _, ok := webhooks.AsVerifyError(err); !ok {
				t.Fatalf("%s: not a VerifyError: %v", how, err)
			}
			return
		}
		switch {
		case n.Payload == nil:
			t.Fatalf("%s: accepted a notification without a payload: %+v", how, n)
		case n.DedupKey == "":
			t.Fatalf("%s: accepted a notification without an id: %+v", how, n)
		case n.Payload.Kind == orders.NotifyPayment && (n.Payload.Transaction == nil || n.Payload.Transaction.OutTradeNo == ""):
			t.Fatalf("%s: accepted a payment without its out_trade_no: %+v", how, n)
		case n.Payload.Kind == orders.NotifyRefund && (n.Payload.Refund == nil || n.Payload.Refund.OutRefundNo == "" || n.Payload.Refund.OutTradeNo == ""):
			t.Fatalf("%s: accepted a refund without its numbers: %+v", how, n)
		case n.Payload.Kind != orders.NotifyPayment && n.Payload.Kind != orders.NotifyRefund:
			t.Fatalf("%s: accepted a notification of kind %q", how, n.Payload.Kind)
		}
	}
	const nonce = "fuzz-nonce-0123456789abcdef"
	signedElsewhere := paySigned(f, e, []byte(`{"id":"EV-signed"}`), nonce)
	f.Fuzz(func(t *testing.T, body, plaintext []byte, eventType string) {
		// An arbitrary body under another body's signature.
		forged := signedElsewhere
		forged.Body = body
		if n, err := e.pay.ParseNotification(ctx, forged); err == nil {
			t.Fatalf("accepted a body its signature does not cover: %+v", n)
		} else {
			check(t, "forged", webhooks.Opened[*orders.Notification]{}, err)
		}
		// An arbitrary body, signed.
		n, err := e.pay.ParseNotification(ctx, paySigned(t, e, body, nonce))
		check(t, "signed body", n, err)
		// An arbitrary resource, encrypted and signed.
		n, err = e.pay.ParseNotification(ctx, paySigned(t, e, payEnvelope(t, e, "EV-fuzz", eventType, "transaction", "0123456789ab", plaintext), nonce))
		check(t, "signed resource", n, err)
	})
}
