package qq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

// sink stands in for minigate's payment callback: it keeps every
// notification body and answers QQ wallet's "received".
type sink struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newSink(t *testing.T, pay *qq.Pay) *sink {
	t.Helper()
	s := &sink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, b)
		s.mu.Unlock()
		ack := pay.NotifyAck()
		w.Header().Set("Content-Type", ack.ContentType)
		w.WriteHeader(ack.Status)
		_, _ = w.Write(ack.Body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.bodies...)
}

func (e *env) pay(t *testing.T) *qq.Pay {
	t.Helper()
	return e.payWith(t, func(*config.Pay, *adapters.Options) {})
}

// payWith returns a QQ wallet adapter for a copy of the app's merchant
// config and options, changed by change.
func (e *env) payWith(t *testing.T, change func(*config.Pay, *adapters.Options)) *qq.Pay {
	t.Helper()
	cfg, pay, opts := *e.cfg, *e.cfg.Pay, e.opts
	change(&pay, &opts)
	cfg.Pay = &pay
	p, err := qq.NewPay(&cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func outTradeNo() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "T" + hex.EncodeToString(b)
}

func prepayRequest(no, notifyURL string, amount int64) orders.PrepayRequest {
	return orders.PrepayRequest{
		OutTradeNo: no, Description: "测试商品", Amount: amount, Attach: "cart=7",
		ExpiresAt: time.Now().Add(30 * time.Minute), NotifyURL: notifyURL + "/callbacks/qq/payments",
		ClientIP: "203.0.113.7",
	}
}

func notification(t *testing.T, pay *qq.Pay, body []byte) (webhooks.Opened[*orders.Notification], error) {
	t.Helper()
	return pay.ParseNotification(context.Background(), webhooks.Request{
		Method: http.MethodPost, Body: body, ReceivedAt: time.Now(),
		Header: http.Header{"Content-Type": {"text/xml"}},
	})
}

// TestPayLifecycle walks one order through every Payments method against
// the simulator: prepay, pay params, query, pay (notification), refunds and
// refund queries.
func TestPayLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	s := newSink(t, pay)
	ctx := context.Background()
	no := outTradeNo()

	pp, err := pay.Prepay(ctx, prepayRequest(no, s.URL, 888))
	if err != nil {
		t.Fatal(err)
	}
	if pp.PrepayID == "" {
		t.Fatal("empty prepay_id")
	}
	again, err := pay.Prepay(ctx, prepayRequest(no, s.URL, 888))
	if err != nil || again.PrepayID != pp.PrepayID {
		t.Fatalf("repeated prepay = %+v, %v; want prepay_id %s", again, err, pp.PrepayID)
	}
	params, err := pay.PayParams(ctx, pp)
	if err != nil {
		t.Fatal(err)
	}
	if len(params) != 2 || params["package"] != "prepay_id="+pp.PrepayID || params["bargainor_id"] != e.cfg.Pay.MchID {
		t.Fatalf("pay params = %v", params)
	}

	tx, err := pay.Query(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	if tx.State != orders.PaymentPending || tx.Amount != 888 || tx.OutTradeNo != no || tx.TransactionID != "" {
		t.Fatalf("unpaid order = %+v", tx)
	}

	rep, err := e.sim.Pay(ctx, e.sb, no, sandbox.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deliveries) != 1 || rep.Deliveries[0].Status != http.StatusOK ||
		rep.Deliveries[0].Body != "<xml><return_code>SUCCESS</return_code></xml>" {
		t.Fatalf("deliveries = %+v", rep.Deliveries)
	}
	bodies := s.received()
	if len(bodies) != 1 {
		t.Fatalf("sink got %d notifications", len(bodies))
	}
	n, err := notification(t, pay, bodies[0])
	if err != nil {
		t.Fatal(err)
	}
	txn := rep.Details["transaction_id"].(string)
	if n.Payload.Kind != orders.NotifyPayment || n.DedupKey != txn+":SUCCESS" || n.EventType != "qpay_notify/SUCCESS" {
		t.Fatalf("notification = %+v", n)
	}
	nt := n.Payload.Transaction
	if nt.State != orders.PaymentPaid || nt.Amount != 888 || nt.Currency != "CNY" || nt.OutTradeNo != no ||
		nt.TransactionID != txn || nt.MchID != e.cfg.Pay.MchID || nt.AppID != e.cfg.AppID || nt.PayerID == "" {
		t.Fatalf("notified transaction = %+v", nt)
	}
	if d := time.Since(nt.PaidAt); d < -time.Second || d > time.Minute {
		t.Fatalf("paid at %v, %v ago", nt.PaidAt, d)
	}
	if _, ok := n.Summary["openid"]; ok {
		t.Fatal("the summary carries the payer's openid")
	}

	tx, err = pay.Query(ctx, no)
	if err != nil {
		t.Fatal(err)
	}
	if tx.State != orders.PaymentPaid || tx.TransactionID != txn || !tx.PaidAt.Equal(nt.PaidAt) {
		t.Fatalf("paid order = %+v", tx)
	}
	err = pay.Close(ctx, no)
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "ORDERPAID")
	_, err = pay.Prepay(ctx, prepayRequest(no, s.URL, 888))
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "ORDERPAID")

	r1, err := pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, TransactionID: txn, OutRefundNo: no + "R1", Amount: 300, Total: 888})
	if err != nil {
		t.Fatal(err)
	}
	if r1.State != orders.RefundPending || r1.RefundID == "" || r1.Amount != 300 || r1.Total != 888 || r1.TransactionID != txn {
		t.Fatalf("refund = %+v", r1)
	}
	t.Run("same out_refund_no refunds once", func(t *testing.T) {
		r, err := pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: no + "R1", Amount: 300, Total: 888})
		if err != nil || r.RefundID != r1.RefundID {
			t.Fatalf("repeated refund = %+v, %v; want refund_id %s", r, err, r1.RefundID)
		}
		_, err = pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: no + "R1", Amount: 301, Total: 888})
		wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "INVALID_REQUEST")
	})

	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := pay.QueryRefund(ctx, no, no+"R1")
		if err != nil {
			t.Fatal(err)
		}
		if r.RefundID != r1.RefundID || r.Amount != 300 || r.Total != 888 || r.OutTradeNo != no {
			t.Fatalf("queried refund = %+v", r)
		}
		if r.State == orders.RefundSucceeded {
			break
		}
		if r.State != orders.RefundPending || time.Now().After(deadline) {
			t.Fatalf("refund state %s", r.State)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, err := pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: no + "R2", Amount: 588, Total: 888}); err != nil {
		t.Fatal(err)
	}
	_, err = pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: no + "R3", Amount: 1, Total: 888})
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "INVALID_REQUEST")
	if tx, err = pay.Query(ctx, no); err != nil || tx.State != orders.PaymentRefunded {
		t.Fatalf("refunded order = %+v, %v", tx, err)
	}
	_, err = pay.QueryRefund(ctx, no, no+"R9")
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonNotFound, "REFUNDNOTEXIST")
}

func TestPayClose(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	ctx := context.Background()
	no := outTradeNo()
	if _, err := pay.Prepay(ctx, prepayRequest(no, "http://127.0.0.1:9", 100)); err != nil {
		t.Fatal(err)
	}
	if err := pay.Close(ctx, no); err != nil {
		t.Fatal(err)
	}
	tx, err := pay.Query(ctx, no)
	if err != nil || tx.State != orders.PaymentClosed {
		t.Fatalf("closed order = %+v, %v", tx, err)
	}
	if err := pay.Close(ctx, no); err != nil {
		t.Fatalf("closing a closed order: %v", err)
	}
	_, err = pay.Prepay(ctx, prepayRequest(no, "http://127.0.0.1:9", 100))
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "ORDERCLOSED")
	if _, err := e.sim.Pay(ctx, e.sb, no, sandbox.Faults{}); err == nil {
		t.Fatal("the simulator let a closed order be paid")
	}
	_, err = pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: no + "R", Amount: 1, Total: 100})
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "INVALID_REQUEST")

	err = pay.Close(ctx, outTradeNo())
	wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonNotFound, "ORDERNOTEXIST")
}

func TestPrepayRules(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	ctx := context.Background()

	for _, tt := range []struct {
		name   string
		mutate func(*orders.PrepayRequest)
	}{
		{"long description is cut to 128 bytes", func(r *orders.PrepayRequest) { r.Description = strings.Repeat("商", 60) }}, // 180 bytes
		{"IPv6 payer", func(r *orders.PrepayRequest) { r.ClientIP = "2001:db8::1" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := prepayRequest(outTradeNo(), "http://127.0.0.1:9", 1)
			tt.mutate(&req)
			if _, err := pay.Prepay(ctx, req); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("same out_trade_no, other amount", func(t *testing.T) {
		no := outTradeNo()
		if _, err := pay.Prepay(ctx, prepayRequest(no, "http://127.0.0.1:9", 1)); err != nil {
			t.Fatal(err)
		}
		_, err := pay.Prepay(ctx, prepayRequest(no, "http://127.0.0.1:9", 2))
		wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonConflict, "OUT_TRADE_NO_USED")
	})
	refused := []struct {
		name   string
		mutate func(*orders.PrepayRequest)
	}{
		{"attach over 128 bytes", func(r *orders.PrepayRequest) { r.Attach = strings.Repeat("a", 129) }},
		{"out_trade_no over 32 bytes", func(r *orders.PrepayRequest) { r.OutTradeNo = strings.Repeat("a", 33) }},
		{"zero amount", func(r *orders.PrepayRequest) { r.Amount = 0 }},
		{"no notify url", func(r *orders.PrepayRequest) { r.NotifyURL = "" }},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			req := prepayRequest(outTradeNo(), "http://127.0.0.1:9", 1)
			tt.mutate(&req)
			_, err := pay.Prepay(ctx, req)
			wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonInvalidRequest, "")
		})
	}
}

// TestPayPlatformErrors checks how QQ wallet failures reach minigate.
func TestPayPlatformErrors(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	ctx := context.Background()

	t.Run("busy", func(t *testing.T) {
		e.sim.FailQPay(e.cfg.Pay.MchID, sandbox.QPayError{API: "unified_order", ErrCode: "SYSTEMERROR", ErrCodeDes: "系统超时"})
		_, err := pay.Prepay(ctx, prepayRequest(outTradeNo(), "http://127.0.0.1:9", 1))
		pe := wantPlatformError(t, err, qq.PlatformQPay, adapters.ReasonBusy, "SYSTEMERROR")
		if !pe.Retryable() || pe.Message != "系统超时" {
			t.Fatalf("err = %+v", pe)
		}
	})
	// Queries of an unknown order, by a merchant set up as change says.
	for _, tt := range []struct {
		name   string
		change func(*config.Pay, *adapters.Options)
		reason adapters.Reason
		code   string
	}{
		{"unknown order", func(*config.Pay, *adapters.Options) {}, adapters.ReasonNotFound, "ORDERNOTEXIST"},
		{"wrong API key", func(p *config.Pay, _ *adapters.Options) { p.APIKey = "0123456789abcdef0123456789abcdef" },
			adapters.ReasonAuth, "SIGNERROR"},
		{"unknown merchant", func(p *config.Pay, _ *adapters.Options) { p.MchID = "1999999999" },
			adapters.ReasonInvalidRequest, "FAIL"},
		{"unreachable", func(_ *config.Pay, o *adapters.Options) { o.Endpoints.QPayAPI = "http://127.0.0.1:1" },
			adapters.ReasonUnreachable, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.payWith(t, tt.change).Query(ctx, outTradeNo())
			wantPlatformError(t, err, qq.PlatformQPay, tt.reason, tt.code)
		})
	}
}

// TestRefundWithOperator sends op_user_id/op_user_passwd, which the
// simulator requires to be an operator id and an MD5 digest.
func TestRefundWithOperator(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.payWith(t, func(p *config.Pay, _ *adapters.Options) { p.OpUserPasswd = "operator-password" })
	ctx := context.Background()
	no := outTradeNo()
	if _, err := pay.Prepay(ctx, prepayRequest(no, "http://127.0.0.1:9", 50)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Pay(ctx, e.sb, no, sandbox.Faults{Drop: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := pay.Refund(ctx, orders.RefundRequest{OutTradeNo: no, OutRefundNo: no + "R", Amount: 50, Total: 50}); err != nil {
		t.Fatal(err)
	}
}

// TestNotificationFaults has the simulator pay orders with each fault and
// checks what ParseNotification makes of what arrives.
func TestNotificationFaults(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	ctx := context.Background()
	one := int64(1)
	tests := []struct {
		name   string
		faults sandbox.Faults
		reject webhooks.RejectReason // "" = accepted
		check  func(t *testing.T, bodies [][]byte, n webhooks.Opened[*orders.Notification])
	}{
		{name: "bad signature", faults: sandbox.Faults{BadSignature: true}, reject: webhooks.RejectBadSignature},
		{name: "foreign merchant", faults: sandbox.Faults{ForeignMerchant: true}, reject: webhooks.RejectForeignMerchant},
		{name: "foreign app", faults: sandbox.Faults{ForeignAppID: true}, reject: webhooks.RejectForeignApp},
		{name: "truncated", faults: sandbox.Faults{Truncate: true}, reject: webhooks.RejectMalformed},
		{name: "other amount, validly signed", faults: sandbox.Faults{Amount: &one},
			check: func(t *testing.T, _ [][]byte, n webhooks.Opened[*orders.Notification]) {
				if n.Payload.Transaction.Amount != 1 {
					t.Fatalf("amount %d, want the notified 1", n.Payload.Transaction.Amount)
				}
			}},
		{name: "duplicates", faults: sandbox.Faults{Duplicates: 2},
			check: func(t *testing.T, bodies [][]byte, n webhooks.Opened[*orders.Notification]) {
				if len(bodies) != 3 {
					t.Fatalf("%d deliveries, want 3", len(bodies))
				}
				for _, b := range bodies[1:] {
					m, err := notification(t, pay, b)
					if err != nil || m.DedupKey != n.DedupKey {
						t.Fatalf("duplicate = %+v, %v; want id %s", m, err, n.DedupKey)
					}
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSink(t, pay)
			no := outTradeNo()
			if _, err := pay.Prepay(ctx, prepayRequest(no, s.URL, 500)); err != nil {
				t.Fatal(err)
			}
			if _, err := e.sim.Pay(ctx, e.sb, no, tt.faults); err != nil {
				t.Fatal(err)
			}
			bodies := s.received()
			if len(bodies) == 0 {
				t.Fatal("nothing delivered")
			}
			n, err := notification(t, pay, bodies[0])
			if tt.reject != "" {
				ve, ok := webhooks.AsVerifyError(err)
				if !ok || ve.Reason != tt.reject {
					t.Fatalf("err = %v, want rejection %s", err, tt.reject)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, bodies, n)
		})
	}
}

func TestNotificationDropped(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	s := newSink(t, pay)
	ctx := context.Background()
	no := outTradeNo()
	if _, err := pay.Prepay(ctx, prepayRequest(no, s.URL, 10)); err != nil {
		t.Fatal(err)
	}
	rep, err := e.sim.Pay(ctx, e.sb, no, sandbox.Faults{Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Dropped || len(s.received()) != 0 {
		t.Fatalf("report %+v, %d delivered", rep, len(s.received()))
	}
	// The payment happened at the platform all the same: a query sees it.
	tx, err := pay.Query(ctx, no)
	if err != nil || tx.State != orders.PaymentPaid {
		t.Fatalf("query after a lost notification = %+v, %v", tx, err)
	}
}

func TestNotifyReplies(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	ack := pay.NotifyAck()
	if ack.Status != http.StatusOK || string(ack.Body) != "<xml><return_code>SUCCESS</return_code></xml>" {
		t.Fatalf("ack = %d %s", ack.Status, ack.Body)
	}
	nack := pay.NotifyNack("db <down> & out")
	if nack.Status != http.StatusInternalServerError ||
		string(nack.Body) != "<xml><return_code>FAIL</return_code><return_msg>db &lt;down&gt; &amp; out</return_msg></xml>" {
		t.Fatalf("nack = %d %s", nack.Status, nack.Body)
	}
}
