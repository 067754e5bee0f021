package alipay_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

func TestPaymentsEndToEnd(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"public key", "certificate"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			paymentsEndToEnd(t, setupMode(t, false, mode == "certificate"))
		})
	}
}

func paymentsEndToEnd(t *testing.T, e *env) {
	ctx := context.Background()
	const no = "ord_e2e_1"
	u := e.sim.User(e.sbApp, "carol")

	pre := e.prepay(t, no, 1000, "carol")
	if len(pre.PrepayID) != 28 {
		t.Fatalf("trade_no %q", pre.PrepayID)
	}
	if again := e.prepay(t, no, 1000, "carol"); again != pre {
		t.Fatalf("repeated prepay gave %v, then %v", pre, again)
	}
	_, err := e.pay.Prepay(ctx, orders.PrepayRequest{OutTradeNo: no, Description: "minigate test order", Amount: 999,
		Payer: orders.Payer{AlipayUserID: u.AlipayUserID}, NotifyURL: e.notifyURL()})
	if reason(t, err) != adapters.ReasonConflict {
		t.Fatalf("same out_trade_no, other amount: %v, want conflict", err)
	}
	params, err := e.pay.PayParams(ctx, pre)
	if err != nil || len(params) != 1 || params["tradeNO"] != pre.PrepayID {
		t.Fatalf("pay params %v, %v", params, err)
	}

	tx, err := e.pay.Query(ctx, no)
	if err != nil || tx.State != orders.PaymentPending || tx.Amount != 1000 || tx.TransactionID != pre.PrepayID || !tx.PaidAt.IsZero() {
		t.Fatalf("query before paying: %+v, %v", tx, err)
	}

	// The user pays; the notification the simulator sends parses.
	if _, err := e.sim.Pay(ctx, e.sbApp, no, sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	n, err := e.pay.ParseNotification(ctx, e.rcv.next(t))
	if err != nil {
		t.Fatalf("parse payment notification: %v", err)
	}
	ptx := n.Payload.Transaction
	if n.Payload.Kind != orders.NotifyPayment || ptx == nil || ptx.State != orders.PaymentPaid || ptx.Amount != 1000 ||
		ptx.OutTradeNo != no || ptx.TransactionID != pre.PrepayID || ptx.AppID != e.cfg.AppID || ptx.MchID != e.cfg.Pay.SellerID ||
		ptx.PayerID != u.AlipayUserID || ptx.Currency != "CNY" || time.Since(ptx.PaidAt) > time.Minute {
		t.Fatalf("payment notification: %+v %+v", n, ptx)
	}
	if n.DedupKey == "" || n.EventType != "trade_status_sync/TRADE_SUCCESS" {
		t.Fatalf("notification id %q type %q", n.DedupKey, n.EventType)
	}
	for k := range n.Summary {
		if k == "buyer_id" || k == "buyer_open_id" || k == "sign" {
			t.Fatalf("summary carries %s", k)
		}
	}
	tx, err = e.pay.Query(ctx, no)
	if err != nil || tx.State != orders.PaymentPaid || tx.PaidAt.IsZero() || tx.PayerID != u.AlipayUserID {
		t.Fatalf("query after paying: %+v, %v", tx, err)
	}
	if err := e.pay.Close(ctx, no); reason(t, err) != adapters.ReasonConflict {
		t.Fatalf("close a paid order: %v, want conflict", err)
	}

	// Partial refund: fund_change Y.
	rr := orders.RefundRequest{OutTradeNo: no, OutRefundNo: "rf_1", Amount: 300, Total: 1000, Reason: "test"}
	ref, err := e.pay.Refund(ctx, rr)
	if err != nil || ref.State != orders.RefundSucceeded || ref.Amount != 300 || ref.OutRefundNo != "rf_1" || ref.TransactionID != pre.PrepayID {
		t.Fatalf("refund: %+v, %v", ref, err)
	}
	rn, err := e.pay.ParseNotification(ctx, e.rcv.next(t))
	if err != nil || rn.Payload.Kind != orders.NotifyRefund || rn.Payload.Refund == nil || rn.Payload.Refund.OutRefundNo != "rf_1" ||
		rn.Payload.Refund.State != orders.RefundSucceeded || rn.Payload.Refund.Total != 1000 || rn.Payload.Refund.Amount != 0 || rn.Payload.Refund.SucceededAt.IsZero() {
		t.Fatalf("refund notification: %+v %+v, %v", rn, rn.Payload.Refund, err)
	}
	if rn.DedupKey == n.DedupKey {
		t.Fatal("the refund notification has the payment's id")
	}
	// The same refund again: fund_change N, confirmed by the refund query.
	ref, err = e.pay.Refund(ctx, rr)
	if err != nil || ref.State != orders.RefundSucceeded || ref.Amount != 300 || ref.Total != 1000 {
		t.Fatalf("repeated refund: %+v, %v", ref, err)
	}
	if _, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: "rf_2", Amount: 701, Total: 1000}); reason(t, err) != adapters.ReasonConflict {
		t.Fatalf("over-refund: %v, want conflict", err)
	}
	if q, err := e.pay.QueryRefund(ctx, no, "rf_2"); err != nil || q.State != orders.RefundPending {
		t.Fatalf("query of a refund that did not happen: %+v, %v", q, err)
	}
	if q, err := e.pay.QueryRefund(ctx, no, "rf_1"); err != nil || q.State != orders.RefundSucceeded || q.Amount != 300 || q.SucceededAt.IsZero() {
		t.Fatalf("refund query: %+v, %v", q, err)
	}
	// Refund the rest: Alipay closes the trade, which reads as refunded.
	if ref, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: "rf_2", Amount: 700, Total: 1000}); err != nil || ref.State != orders.RefundSucceeded {
		t.Fatalf("refund the rest: %+v, %v", ref, err)
	}
	full, err := e.pay.ParseNotification(ctx, e.rcv.next(t))
	if err != nil || full.Payload.Kind != orders.NotifyRefund || full.Payload.Refund.OutRefundNo != "rf_2" || full.EventType != "trade_status_sync/TRADE_CLOSED" {
		t.Fatalf("full refund notification: %+v, %v", full, err)
	}
	if tx, err := e.pay.Query(ctx, no); err != nil || tx.State != orders.PaymentRefunded || tx.Amount != 1000 {
		t.Fatalf("query after a full refund: %+v, %v", tx, err)
	}
	if ack := e.pay.NotifyAck(); ack.Status != 200 || string(ack.Body) != "success" {
		t.Fatalf("ack %d %q", ack.Status, ack.Body)
	}
	if nack := e.pay.NotifyNack("db down"); nack.Status < 500 || string(nack.Body) == "success" {
		t.Fatalf("nack %d %q", nack.Status, nack.Body)
	}
}

func TestCloseAndUnknownOrders(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	ctx := context.Background()
	e.prepay(t, "ord_close", 50, "dave")
	if err := e.pay.Close(ctx, "ord_close"); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := e.pay.Close(ctx, "ord_close"); err != nil {
		t.Fatalf("closing a closed order: %v", err)
	}
	if tx, err := e.pay.Query(ctx, "ord_close"); err != nil || tx.State != orders.PaymentClosed {
		t.Fatalf("query a closed order: %+v, %v", tx, err)
	}
	if _, err := e.sim.Pay(ctx, e.sbApp, "ord_close", sandbox.Faults{}); err == nil {
		t.Fatal("the simulator let a closed order be paid")
	}
	if _, err := e.pay.Query(ctx, "ord_missing"); reason(t, err) != adapters.ReasonNotFound {
		t.Fatalf("query unknown: %v", err)
	}
	if err := e.pay.Close(ctx, "ord_missing"); reason(t, err) != adapters.ReasonNotFound {
		t.Fatalf("close unknown: %v", err)
	}
	e.prepay(t, "ord_unpaid", 50, "dave")
	if _, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: "ord_unpaid", OutRefundNo: "r", Amount: 10, Total: 50}); reason(t, err) != adapters.ReasonConflict {
		t.Fatalf("refund unpaid: %v", err)
	}
	if _, err := e.pay.QueryRefund(ctx, "ord_missing", "r"); reason(t, err) != adapters.ReasonNotFound {
		t.Fatalf("refund query for an unknown order: %v", err)
	}
	if _, err := e.pay.PayParams(ctx, orders.Prepay{}); err == nil {
		t.Fatal("pay params without a trade_no")
	}
}

func TestPrepayPayerAndPassback(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	ctx := context.Background()
	u := e.sim.User(e.sbApp, "erin")
	cases := []struct {
		name      string
		payer     orders.Payer
		wantPayer string
		reason    adapters.Reason
	}{
		{"open id only", orders.Payer{OpenID: u.AlipayOpenID}, u.AlipayOpenID, ""},
		{"user id as open id", orders.Payer{OpenID: u.AlipayUserID}, u.AlipayUserID, ""},
		{"both", orders.Payer{OpenID: u.AlipayOpenID, AlipayUserID: u.AlipayUserID}, u.AlipayUserID, ""},
		{"none", orders.Payer{}, "", adapters.ReasonInvalidRequest},
	}
	for i, c := range cases {
		no := "ord_payer_" + string(rune('a'+i))
		attach := "cart=1&coupon=满减 10"
		_, err := e.pay.Prepay(ctx, orders.PrepayRequest{OutTradeNo: no, Description: "payer test", Amount: 1,
			Attach: attach, Payer: c.payer, NotifyURL: e.notifyURL(), ExpiresAt: time.Now().Add(10 * time.Minute)})
		if c.reason != "" {
			if reason(t, err) != c.reason {
				t.Fatalf("%s: %v", c.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, err := e.sim.Pay(ctx, e.sbApp, no, sandbox.Faults{}); err != nil {
			t.Fatal(err)
		}
		req := e.rcv.next(t)
		n, err := e.pay.ParseNotification(ctx, req)
		if err != nil || n.Payload.Transaction.PayerID != c.wantPayer {
			t.Fatalf("%s: payer %+v, %v", c.name, n, err)
		}
		form, _ := url.ParseQuery(string(req.Body))
		if got, _ := url.QueryUnescape(form.Get("passback_params")); got != attach {
			t.Fatalf("%s: passback_params %q", c.name, form.Get("passback_params"))
		}
	}
	// An order past its time_expire closes at Alipay.
	_, err := e.pay.Prepay(ctx, orders.PrepayRequest{OutTradeNo: "ord_expired", Description: "x", Amount: 1,
		Payer: orders.Payer{AlipayUserID: u.AlipayUserID}, NotifyURL: e.notifyURL(), ExpiresAt: time.Now().Add(-time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if tx, err := e.pay.Query(ctx, "ord_expired"); err != nil || tx.State != orders.PaymentClosed {
		t.Fatalf("expired order: %+v, %v", tx, err)
	}
}

func TestEncryptedAPI(t *testing.T) {
	t.Parallel()
	e := setup(t, true)
	ctx := context.Background()
	pre := e.prepay(t, "ord_enc", 12345, "frank")
	tx, err := e.pay.Query(ctx, "ord_enc")
	if err != nil || tx.Amount != 12345 || tx.TransactionID != pre.PrepayID {
		t.Fatalf("encrypted query: %+v, %v", tx, err)
	}
	code, _ := e.sim.MintCode(e.cfg.ID, "frank", "login")
	if _, err := e.client.Code2Session(ctx, code); err != nil {
		t.Fatalf("login with content encryption on: %v", err)
	}
}

func TestNotificationFaults(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	ctx := context.Background()
	amount := int64(1)
	cases := []struct {
		name   string
		faults sandbox.Faults
		reject string // expected VerifyError reason; "any" any reason; "" accepted
		check  func(t *testing.T, n webhooks.Opened[*orders.Notification])
	}{
		{"bad signature", sandbox.Faults{BadSignature: true}, "bad_signature", nil},
		{"foreign app", sandbox.Faults{ForeignAppID: true}, "foreign_app", nil},
		{"foreign merchant", sandbox.Faults{ForeignMerchant: true}, "foreign_merchant", nil},
		{"truncated", sandbox.Faults{Truncate: true}, "any", nil},
		{"wrong amount, validly signed", sandbox.Faults{Amount: &amount}, "", func(t *testing.T, n webhooks.Opened[*orders.Notification]) {
			if n.Payload.Transaction.Amount != 1 {
				t.Fatalf("amount %d", n.Payload.Transaction.Amount)
			}
		}},
		// Alipay retries for ~25 hours: trade notifications have no freshness window.
		{"old notify_time", sandbox.Faults{StaleTimestamp: true}, "", nil},
	}
	for i, c := range cases {
		no := "ord_fault_" + string(rune('a'+i))
		e.prepay(t, no, 500, "gina")
		if _, err := e.sim.Pay(ctx, e.sbApp, no, c.faults); err != nil {
			t.Fatal(err)
		}
		n, err := e.pay.ParseNotification(ctx, e.rcv.next(t))
		if c.reject != "" {
			if got := rejected(t, err); c.reject != "any" && string(got) != c.reject {
				t.Fatalf("%s: rejected as %s (%v), want %s", c.name, got, err, c.reject)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.check != nil {
			c.check(t, n)
		}
	}

	// Duplicates carry one id.
	e.prepay(t, "ord_dup", 500, "gina")
	if _, err := e.sim.Pay(ctx, e.sbApp, "ord_dup", sandbox.Faults{Duplicates: 2}); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for range 3 {
		n, err := e.pay.ParseNotification(ctx, e.rcv.next(t))
		if err != nil {
			t.Fatal(err)
		}
		ids[n.DedupKey] = true
	}
	if len(ids) != 1 {
		t.Fatalf("duplicates parsed to ids %v", ids)
	}
}
