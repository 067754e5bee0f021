package wechat_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

// payGot is a notification the test's callback receiver handled.
type payGot struct {
	req webhooks.Request
	n   webhooks.Opened[*orders.Notification]
	err error
}

// payEnv is one merchant in the shared simulator, its adapter, and a
// receiver at the app's callback URL that parses notifications with the
// adapter and answers with its Ack/Nack.
type payEnv struct {
	sim    *sandbox.Sandbox
	simURL string
	sb     *sandbox.App
	cfg    *config.App
	pay    *wechat.Pay
	opts   adapters.Options
	got    chan payGot
	// expires is every order's ExpiresAt, so prepays can be repeated.
	expires time.Time
}

func paySetup(t testing.TB, mode string, adjust func(*adapters.Options)) *payEnv {
	t.Helper()
	e := &payEnv{got: make(chan payGot, 64), expires: time.Now().Add(time.Hour)}
	e.sim, e.simURL = testenv.Simulator(t)
	var current atomic.Pointer[wechat.Pay]
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := webhooks.Request{
			Method: r.Method, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body,
			RemoteAddr: r.RemoteAddr, ReceivedAt: time.Now(),
		}
		p := current.Load()
		n, err := p.ParseNotification(r.Context(), req)
		e.got <- payGot{req: req, n: n, err: err}
		reply := p.NotifyAck()
		if err != nil {
			reply = p.NotifyNack("rejected")
		}
		if reply.ContentType != "" {
			w.Header().Set("Content-Type", reply.ContentType)
		}
		w.WriteHeader(reply.Status)
		_, _ = w.Write(reply.Body)
	}))
	t.Cleanup(recv.Close)
	var err error
	e.sb, e.cfg, err = sandbox.NewAppPair(sandbox.AppSpec{
		ID: "pay-" + payHex(4), Platform: sandbox.WeChat, PublicURL: recv.URL, Pay: true,
		WeChatPayKeyMode: mode, Key: testenv.Key,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.sim.AddApp(e.sb)
	e.opts = adapters.Options{
		Endpoints: sandbox.Endpoints(e.simURL), Timeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if adjust != nil {
		adjust(&e.opts)
	}
	if e.pay, err = wechat.NewPay(e.cfg, e.opts); err != nil {
		t.Fatal(err)
	}
	current.Store(e.pay)
	return e
}

func payHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *payEnv) notifyURL() string { return e.sb.CallbackURL + "/payments" }

func (e *payEnv) prepay(t *testing.T, outTradeNo string, amount int64) orders.Prepay {
	t.Helper()
	pp, err := e.pay.Prepay(context.Background(), e.prepayRequest(outTradeNo, amount))
	if err != nil {
		t.Fatalf("prepay %s: %v", outTradeNo, err)
	}
	return pp
}

func (e *payEnv) prepayRequest(outTradeNo string, amount int64) orders.PrepayRequest {
	return orders.PrepayRequest{
		OutTradeNo: outTradeNo, Description: "咖啡", Amount: amount, Attach: "cart-1",
		Payer: orders.Payer{OpenID: e.sim.User(e.sb, "alice").OpenID}, NotifyURL: e.notifyURL(),
		ExpiresAt: e.expires,
	}
}

// next returns the next notification the receiver handled.
func (e *payEnv) next(t *testing.T) payGot {
	t.Helper()
	select {
	case g := <-e.got:
		return g
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return payGot{}
	}
}

func (e *payEnv) paid(t *testing.T, outTradeNo string, f sandbox.Faults) *sandbox.Report {
	t.Helper()
	rep, err := e.sim.Pay(context.Background(), e.sb, outTradeNo, f)
	if err != nil {
		t.Fatalf("pay %s: %v", outTradeNo, err)
	}
	return rep
}

// payVerifyPaySign checks paySign with the merchant public key, by hand.
func payVerifyPaySign(pub *rsa.PublicKey, p orders.PayParams) error {
	sig, err := base64.StdEncoding.DecodeString(p["paySign"])
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(p["appId"] + "\n" + p["timeStamp"] + "\n" + p["nonceStr"] + "\n" + p["package"] + "\n"))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
}

func payReasonOf(t *testing.T, err error) *adapters.PlatformError {
	t.Helper()
	pe, ok := adapters.AsPlatformError(err)
	if !ok {
		t.Fatalf("want a *adapters.PlatformError, got %T %v", err, err)
	}
	return pe
}

func TestPayEndToEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode, signWith string
	}{
		{sandbox.KeyModePublicKey, ""},
		{sandbox.KeyModeCertificate, ""},
		{sandbox.KeyModeBoth, "public_key"},
		{sandbox.KeyModeBoth, "certificate"},
	} {
		t.Run(tc.mode+"/"+tc.signWith, func(t *testing.T) {
			t.Parallel()
			e := paySetup(t, tc.mode, nil)
			if tc.signWith != "" {
				e.sb.WeChatPay.SignWith = tc.signWith
			}
			ctx := context.Background()
			no := "E2E" + payHex(8)
			req := e.prepayRequest(no, 100)
			req.Description = strings.Repeat("长", 130) // cut to 127, or the platform refuses it
			pp, err := e.pay.Prepay(ctx, req)
			if err != nil {
				t.Fatalf("prepay: %v", err)
			}
			if again, err := e.pay.Prepay(ctx, req); err != nil || again != pp {
				t.Fatalf("repeated prepay: %v %v, want %v", again, err, pp)
			}

			params, err := e.pay.PayParams(ctx, pp)
			if err != nil {
				t.Fatal(err)
			}
			if params["appId"] != e.cfg.AppID || params["package"] != "prepay_id="+pp.PrepayID || params["signType"] != "RSA" {
				t.Errorf("pay params %v", params)
			}
			if ts, err := strconv.ParseInt(params["timeStamp"], 10, 64); err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Second {
				t.Errorf("timeStamp %q", params["timeStamp"])
			}
			if err := payVerifyPaySign(e.sb.WeChatPay.MerchantKey, params); err != nil {
				t.Fatalf("paySign does not verify with the merchant public key: %v", err)
			}
			fresh, err := e.pay.PayParams(ctx, pp)
			if err != nil || fresh["nonceStr"] == params["nonceStr"] || fresh["paySign"] == params["paySign"] {
				t.Errorf("second pay params reuse nonce or signature: %v", fresh)
			}
			tampered := orders.PayParams{}
			for k, v := range params {
				tampered[k] = v
			}
			tampered["package"] = "prepay_id=wx0"
			if payVerifyPaySign(e.sb.WeChatPay.MerchantKey, tampered) == nil {
				t.Fatal("the independent verifier accepts a tampered package")
			}

			rep := e.paid(t, no, sandbox.Faults{})
			if len(rep.Deliveries) != 1 || rep.Deliveries[0].Status != http.StatusNoContent || rep.Deliveries[0].Body != "" {
				t.Fatalf("delivery %+v, want our 204 ack", rep.Deliveries)
			}
			g := e.next(t)
			if g.err != nil {
				t.Fatalf("notification rejected: %v", g.err)
			}
			n, openid := g.n, e.sim.User(e.sb, "alice").OpenID
			tx := n.Payload.Transaction
			if n.Payload.Kind != orders.NotifyPayment || n.EventType != "TRANSACTION.SUCCESS" || n.DedupKey != rep.Details["notification_id"] || tx == nil {
				t.Fatalf("notification %+v", n)
			}
			if tx.OutTradeNo != no || tx.State != orders.PaymentPaid || tx.Amount != 100 || tx.Currency != "CNY" ||
				tx.AppID != e.cfg.AppID || tx.MchID != e.cfg.Pay.MchID || tx.PayerID != openid ||
				tx.TransactionID != rep.Details["transaction_id"] || tx.PaidAt.IsZero() {
				t.Errorf("transaction %+v", tx)
			}
			if s := fmt.Sprint(n.Summary); strings.Contains(s, openid) {
				t.Errorf("summary carries the openid: %s", s)
			}

			q, err := e.pay.Query(ctx, no)
			if err != nil || q.State != orders.PaymentPaid || q.TransactionID != tx.TransactionID || !q.PaidAt.Equal(tx.PaidAt) || q.Amount != 100 {
				t.Fatalf("query: %+v %v", q, err)
			}

			r, err := e.pay.Refund(ctx, orders.RefundRequest{
				OutTradeNo: no, OutRefundNo: "R" + no, Amount: 30, Total: 100, Reason: "不想要了", NotifyURL: e.notifyURL(),
			})
			if err != nil || r.State != orders.RefundPending || r.Amount != 30 || r.Total != 100 || r.RefundID == "" {
				t.Fatalf("refund: %+v %v", r, err)
			}
			g = e.next(t)
			if g.err != nil || g.n.Payload.Kind != orders.NotifyRefund || g.n.EventType != "REFUND.SUCCESS" {
				t.Fatalf("refund notification: %+v %v", g.n, g.err)
			}
			if rn := g.n.Payload.Refund; rn.OutRefundNo != "R"+no || rn.OutTradeNo != no || rn.State != orders.RefundSucceeded ||
				rn.Amount != 30 || rn.Total != 100 || rn.RefundID != r.RefundID || rn.SucceededAt.IsZero() {
				t.Errorf("refund %+v", rn)
			}
			if qr, err := e.pay.QueryRefund(ctx, no, "R"+no); err != nil || qr.State != orders.RefundSucceeded || qr.Amount != 30 {
				t.Fatalf("query refund: %+v %v", qr, err)
			}
			if q, err := e.pay.Query(ctx, no); err != nil || q.State != orders.PaymentRefunded {
				t.Fatalf("query after refund: %+v %v", q, err)
			}
		})
	}
}

func TestPayCloseExpireAndConflicts(t *testing.T) {
	t.Parallel()
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	ctx := context.Background()

	unpaid := "C" + payHex(8)
	e.prepay(t, unpaid, 100)
	if err := e.pay.Close(ctx, unpaid); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := e.pay.Close(ctx, unpaid); err != nil {
		t.Fatalf("close twice: %v", err)
	}
	if q, err := e.pay.Query(ctx, unpaid); err != nil || q.State != orders.PaymentClosed {
		t.Fatalf("query closed: %+v %v", q, err)
	}
	if _, err := e.sim.Pay(ctx, e.sb, unpaid, sandbox.Faults{}); err == nil {
		t.Fatal("the simulator let a closed order be paid")
	}

	expired := "X" + payHex(8)
	req := e.prepayRequest(expired, 100)
	req.ExpiresAt = time.Now().Add(-time.Minute)
	if _, err := e.pay.Prepay(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Pay(ctx, e.sb, expired, sandbox.Faults{}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("paying past time_expire: %v", err)
	}

	paid := "P" + payHex(8)
	e.prepay(t, paid, 100)
	e.paid(t, paid, sandbox.Faults{})
	if g := e.next(t); g.err != nil {
		t.Fatal(g.err)
	}
	if _, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: paid, OutRefundNo: "R1" + paid, Amount: 60, Total: 100}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		call   func() error
		reason adapters.Reason
		code   string
	}{
		{"prepay a closed order", func() error { _, err := e.pay.Prepay(ctx, e.prepayRequest(unpaid, 100)); return err }, adapters.ReasonConflict, "ORDER_CLOSED"},
		{"prepay a paid order", func() error { _, err := e.pay.Prepay(ctx, e.prepayRequest(paid, 100)); return err }, adapters.ReasonConflict, "ORDERPAID"},
		{"reuse out_trade_no", func() error { _, err := e.pay.Prepay(ctx, e.prepayRequest(paid, 99)); return err }, adapters.ReasonConflict, "OUT_TRADE_NO_USED"},
		{"close a paid order", func() error { return e.pay.Close(ctx, paid) }, adapters.ReasonConflict, "ORDERPAID"},
		{"refund beyond what is left", func() error {
			_, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: paid, OutRefundNo: "R2" + paid, Amount: 41, Total: 100})
			return err
		}, adapters.ReasonConflict, "NOT_ENOUGH"},
		{"query an unknown order", func() error { _, err := e.pay.Query(ctx, "nope"+payHex(4)); return err }, adapters.ReasonNotFound, "ORDER_NOT_EXIST"},
		{"close an unknown order", func() error { return e.pay.Close(ctx, "nope"+payHex(4)) }, adapters.ReasonNotFound, "ORDER_NOT_EXIST"},
		{"refund an unknown order", func() error {
			_, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: "nope" + payHex(4), OutRefundNo: "R" + payHex(4), Amount: 1, Total: 1})
			return err
		}, adapters.ReasonNotFound, "RESOURCE_NOT_EXISTS"},
		{"query an unknown refund", func() error { _, err := e.pay.QueryRefund(ctx, paid, "nope"); return err }, adapters.ReasonNotFound, "RESOURCE_NOT_EXISTS"},
		{"query another order's refund", func() error { _, err := e.pay.QueryRefund(ctx, unpaid, "R1"+paid); return err }, adapters.ReasonNotFound, ""},
		{"invalid out_trade_no", func() error { _, err := e.pay.Prepay(ctx, e.prepayRequest("a b", 1)); return err }, adapters.ReasonInvalidRequest, "PARAM_ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pe := payReasonOf(t, tc.call())
			if pe.Reason != tc.reason || pe.Code != tc.code || pe.Platform != wechat.PayPlatform || pe.API == "" {
				t.Fatalf("got %+v, want reason %s code %q", pe, tc.reason, tc.code)
			}
		})
	}
	// The same out_refund_no refunds once.
	again, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: paid, OutRefundNo: "R1" + paid, Amount: 60, Total: 100})
	if err != nil || again.Amount != 60 {
		t.Fatalf("repeated refund: %+v %v", again, err)
	}
}

func TestPayErrorReasons(t *testing.T) {
	t.Parallel()
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	for _, tc := range []struct {
		status    int
		code      string
		reason    adapters.Reason
		retryable bool
	}{
		{500, "SYSTEM_ERROR", adapters.ReasonBusy, true},
		{502, "", adapters.ReasonBusy, true},
		{429, "FREQUENCY_LIMITED", adapters.ReasonRateLimited, false},
		{401, "SIGN_ERROR", adapters.ReasonAuth, false},
		{403, "NO_AUTH", adapters.ReasonAuth, false},
		{400, "APPID_MCHID_NOT_MATCH", adapters.ReasonAuth, false},
		{400, "INVALID_REQUEST", adapters.ReasonInvalidRequest, false},
		{403, "TRADE_ERROR", adapters.ReasonRejected, false},
		{403, "SOMETHING_NEW", adapters.ReasonRejected, false},
		{404, "", adapters.ReasonNotFound, false},
	} {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.code), func(t *testing.T) {
			// Not parallel: injected failures are consumed in order.
			e.sim.FailWeChatPay(e.cfg.Pay.MchID, sandbox.WeChatPayError{API: "query_order", Status: tc.status, Code: tc.code, Message: "injected"})
			_, err := e.pay.Query(context.Background(), "any-order")
			pe := payReasonOf(t, err)
			if pe.Reason != tc.reason || pe.HTTPStatus != tc.status || pe.Code != tc.code || pe.Retryable() != tc.retryable || pe.API != "query_order" {
				t.Fatalf("got %+v (retryable %v), want %s", pe, pe.Retryable(), tc.reason)
			}
		})
	}
}

func TestPayTransportAndTrustFailures(t *testing.T) {
	t.Parallel()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	_ = closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 16)
	t.Cleanup(func() {
		_ = silent.Close()
		for len(accepted) > 0 {
			_ = (<-accepted).Close()
		}
	})
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	for _, tc := range []struct {
		name   string
		mode   string
		adjust func(*adapters.Options)
		edit   func(*config.App, *payEnv)
		reason adapters.Reason
	}{
		{name: "unreachable", mode: sandbox.KeyModePublicKey, reason: adapters.ReasonUnreachable,
			adjust: func(o *adapters.Options) { o.Endpoints.WeChatPayAPI = closedURL }},
		{name: "timeout", mode: sandbox.KeyModePublicKey, reason: adapters.ReasonTimeout,
			adjust: func(o *adapters.Options) {
				o.Endpoints.WeChatPayAPI, o.Timeout = "http://"+silent.Addr().String(), 200*time.Millisecond
			}},
		{name: "answer signed by another key", mode: sandbox.KeyModePublicKey, reason: adapters.ReasonBadResponse,
			edit: func(a *config.App, e *payEnv) {
				other, _ := testenv.Key()
				for other.Equal(e.sb.WeChatPay.PlatformKey) {
					other, _ = testenv.Key()
				}
				a.Pay.PublicKey = &other.PublicKey
			}},
		{name: "certificates under another APIv3 key", mode: sandbox.KeyModeCertificate, reason: adapters.ReasonBadResponse,
			edit: func(a *config.App, _ *payEnv) { a.Pay.APIv3Key = strings.Repeat("k", 32) }},
		{name: "wrong merchant serial", mode: sandbox.KeyModePublicKey, reason: adapters.ReasonAuth,
			edit: func(a *config.App, _ *payEnv) { a.Pay.SerialNo = "0123456789ABCDEF" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := paySetup(t, tc.mode, tc.adjust)
			p := e.pay
			if tc.edit != nil {
				cfg := *e.cfg
				pay := *cfg.Pay
				cfg.Pay = &pay
				tc.edit(&cfg, e)
				var err error // this subtest's own: the subtests run in parallel
				if p, err = wechat.NewPay(&cfg, e.opts); err != nil {
					t.Fatal(err)
				}
			}
			_, err := p.Prepay(context.Background(), e.prepayRequest("T"+payHex(8), 100))
			if pe := payReasonOf(t, err); pe.Reason != tc.reason {
				t.Fatalf("got %+v, want %s", pe, tc.reason)
			}
		})
	}
}

func TestNewPayRejectsIncompleteConfig(t *testing.T) {
	t.Parallel()
	_, good, err := sandbox.NewAppPair(sandbox.AppSpec{ID: "pay-cfg", Platform: sandbox.WeChat, Pay: true, Key: testenv.Key})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*config.Pay)
	}{
		{"no mch_id", func(p *config.Pay) { p.MchID = "" }},
		{"no serial", func(p *config.Pay) { p.SerialNo = "" }},
		{"no private key", func(p *config.Pay) { p.PrivateKey = nil }},
		{"short APIv3 key", func(p *config.Pay) { p.APIv3Key = "short" }},
		{"public key without id", func(p *config.Pay) { p.PublicKeyID = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := *good
			pay := *good.Pay
			tc.edit(&pay)
			cfg.Pay = &pay
			if _, err := wechat.NewPay(&cfg, adapters.Options{}); err == nil || !strings.HasPrefix(err.Error(), "wechat: pay:") {
				t.Fatalf("got %v", err)
			}
		})
	}
	if _, err := wechat.NewPay(good, adapters.Options{}); err != nil {
		t.Fatalf("complete config: %v", err)
	}
}

func TestPayNotificationFaults(t *testing.T) {
	t.Parallel()
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	amount := int64(1)
	for _, tc := range []struct {
		name   string
		faults sandbox.Faults
		copies int
		reject webhooks.RejectReason // "" = accepted
		check  func(t *testing.T, tx *orders.Transaction)
	}{
		{name: "duplicates", faults: sandbox.Faults{Duplicates: 2}, copies: 3},
		{name: "bad signature", faults: sandbox.Faults{BadSignature: true}, copies: 1, reject: webhooks.RejectBadSignature},
		{name: "stale timestamp", faults: sandbox.Faults{StaleTimestamp: true}, copies: 1, reject: webhooks.RejectStaleTimestamp},
		{name: "tampered ciphertext", faults: sandbox.Faults{TamperCiphertext: true}, copies: 1, reject: webhooks.RejectBadCiphertext},
		{name: "truncated", faults: sandbox.Faults{Truncate: true}, copies: 1, reject: webhooks.RejectMalformed},
		{name: "other amount", faults: sandbox.Faults{Amount: &amount}, copies: 1, check: func(t *testing.T, tx *orders.Transaction) {
			if tx.Amount != 1 {
				t.Errorf("amount %d, want the notified 1 (the domain compares it)", tx.Amount)
			}
		}},
		{name: "foreign merchant", faults: sandbox.Faults{ForeignMerchant: true}, copies: 1, check: func(t *testing.T, tx *orders.Transaction) {
			if tx.MchID == e.cfg.Pay.MchID || tx.MchID == "" {
				t.Errorf("mchid %q, want the foreign one as notified (the domain compares it)", tx.MchID)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share one receiver.
			no := "F" + payHex(8)
			e.prepay(t, no, 100)
			rep := e.paid(t, no, tc.faults)
			if len(rep.Deliveries) != tc.copies {
				t.Fatalf("%d deliveries, want %d", len(rep.Deliveries), tc.copies)
			}
			ids := map[string]bool{}
			for range tc.copies {
				g := e.next(t)
				if tc.reject != "" {
					ve, ok := webhooks.AsVerifyError(g.err)
					if !ok || ve.Reason != tc.reject {
						t.Fatalf("got %v, want rejection %s", g.err, tc.reject)
					}
					continue
				}
				if g.err != nil {
					t.Fatalf("rejected: %v", g.err)
				}
				ids[g.n.DedupKey] = true
				if g.n.Payload.Transaction.OutTradeNo != no {
					t.Errorf("out_trade_no %s", g.n.Payload.Transaction.OutTradeNo)
				}
				if tc.check != nil {
					tc.check(t, g.n.Payload.Transaction)
				}
			}
			for _, d := range rep.Deliveries {
				want := http.StatusNoContent
				if tc.reject != "" {
					want = http.StatusInternalServerError
				}
				if d.Status != want {
					t.Errorf("delivery answered %d %q, want %d", d.Status, d.Body, want)
				}
				if tc.reject != "" && d.Body != `{"code":"FAIL","message":"rejected"}` {
					t.Errorf("nack body %q", d.Body)
				}
			}
			if tc.reject == "" && len(ids) != 1 {
				t.Errorf("ids %v, want one for all copies", ids)
			}
		})
	}
}

// payCraft builds a notification signed with the platform key and
// encrypted with the APIv3 key, as the platform would send it.
func payCraft(t *testing.T, e *payEnv, eventType, originalType string, plaintext []byte) webhooks.Request {
	t.Helper()
	return paySigned(t, e, payEnvelope(t, e, "EV-"+payHex(8), eventType, originalType, payHex(6), plaintext), payHex(16))
}

// payEnvelope is a notification body of eventType whose resource is
// plaintext encrypted with the APIv3 key under nonce (12 characters).
func payEnvelope(t testing.TB, e *payEnv, id, eventType, originalType, nonce string, plaintext []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher([]byte(e.cfg.Pay.APIv3Key))
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{
		"id": id, "create_time": time.Now().Format(time.RFC3339), "resource_type": "encrypt-resource",
		"event_type": eventType, "summary": "s",
		"resource": map[string]string{
			"original_type": originalType, "algorithm": "AEAD_AES_256_GCM", "associated_data": originalType, "nonce": nonce,
			"ciphertext": base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte(nonce), plaintext, []byte(originalType))),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// paySigned is body as the platform sends it: signed with its key, with
// nonce in the signature.
func paySigned(t testing.TB, e *payEnv, body []byte, nonce string) webhooks.Request {
	t.Helper()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, e.sb.WeChatPay.PlatformKey, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
	h.Set("Wechatpay-Serial", e.sb.WeChatPay.PublicKeyID)
	h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
	return webhooks.Request{Method: http.MethodPost, Header: h, Body: body, ReceivedAt: time.Now()}
}

func TestPayNotificationChecks(t *testing.T) {
	t.Parallel()
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	no := "K" + payHex(8)
	e.prepay(t, no, 100)
	e.paid(t, no, sandbox.Faults{})
	valid := e.next(t)
	if valid.err != nil {
		t.Fatal(valid.err)
	}
	edited := func(edit func(h http.Header)) webhooks.Request {
		r := valid.req
		r.Header = valid.req.Header.Clone()
		edit(r.Header)
		return r
	}
	shifted := func(d, window time.Duration) *wechat.Pay {
		opts := e.opts
		opts.Now, opts.CallbackWindow = func() time.Time { return time.Now().Add(d) }, window
		p, err := wechat.NewPay(e.cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	abnormal, _ := json.Marshal(map[string]any{
		"mchid": e.cfg.Pay.MchID, "out_trade_no": no, "transaction_id": "42", "out_refund_no": "R" + no,
		"refund_id": "50", "refund_status": "ABNORMAL", "amount": map[string]int64{"total": 100, "refund": 100},
	})
	for _, tc := range []struct {
		name   string
		pay    *wechat.Pay
		req    webhooks.Request
		reject webhooks.RejectReason
		check  func(t *testing.T, n webhooks.Opened[*orders.Notification])
	}{
		{name: "as delivered", req: valid.req},
		{name: "clock 4 minutes ahead", pay: shifted(4*time.Minute, 0), req: valid.req},
		{name: "clock 2 minutes ahead, 1-minute window", pay: shifted(2*time.Minute, time.Minute), req: valid.req, reject: webhooks.RejectStaleTimestamp},
		{name: "no signature", req: edited(func(h http.Header) { h.Del("Wechatpay-Signature") }), reject: webhooks.RejectMissingSignature},
		{name: "no serial", req: edited(func(h http.Header) { h.Del("Wechatpay-Serial") }), reject: webhooks.RejectMissingSignature},
		{name: "no timestamp", req: edited(func(h http.Header) { h.Del("Wechatpay-Timestamp") }), reject: webhooks.RejectMissingSignature},
		{name: "no nonce", req: edited(func(h http.Header) { h.Del("Wechatpay-Nonce") }), reject: webhooks.RejectMissingSignature},
		{name: "timestamp not a number", req: edited(func(h http.Header) { h.Set("Wechatpay-Timestamp", "soon") }), reject: webhooks.RejectMalformed},
		{name: "unknown serial", req: edited(func(h http.Header) { h.Set("Wechatpay-Serial", "PUB_KEY_ID_0000") }), reject: webhooks.RejectBadSignature},
		{name: "other nonce", req: edited(func(h http.Header) { h.Set("Wechatpay-Nonce", "x") }), reject: webhooks.RejectBadSignature},
		{name: "unsupported event", req: payCraft(t, e, "MARKETING.COUPON", "coupon", []byte(`{}`)), reject: webhooks.RejectUnsupported},
		// wechatpay-go's decryption panicked on a nonce that GCM cannot use.
		{name: "signed, resource nonce not 12 bytes", req: paySigned(t, e, []byte(`{"id":"EV-short-nonce","event_type":"TRANSACTION.SUCCESS",`+
			`"resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","nonce":"abc","associated_data":"transaction"}}`), "n-short"), reject: webhooks.RejectMalformed},
		{name: "refund abnormal", req: payCraft(t, e, "REFUND.ABNORMAL", "refund", abnormal), check: func(t *testing.T, n webhooks.Opened[*orders.Notification]) {
			if n.Payload.Kind != orders.NotifyRefund || n.Payload.Refund.State != orders.RefundFailed || n.Payload.Refund.OutRefundNo != "R"+no || n.Payload.Refund.Amount != 100 {
				t.Errorf("notification %+v refund %+v", n, n.Payload.Refund)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := tc.pay
			if p == nil {
				p = e.pay
			}
			n, err := p.ParseNotification(context.Background(), tc.req)
			if tc.reject != "" {
				if ve, ok := webhooks.AsVerifyError(err); !ok || ve.Reason != tc.reject {
					t.Fatalf("got %v, want rejection %s", err, tc.reject)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if tc.check != nil {
				tc.check(t, n)
			} else if n.DedupKey != valid.n.DedupKey || n.Payload.Transaction.OutTradeNo != no {
				t.Errorf("notification %+v", n)
			}
		})
	}
}

// TestPayObservesEachCall runs alone (not parallel) so the counters move
// only by its own calls.
func TestPayObservesEachCall(t *testing.T) {
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	count := func(api, outcome string) float64 {
		t.Helper()
		families, err := metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"platform": wechat.PayPlatform, "api": api, "outcome": outcome}
		for _, f := range families {
			if f.GetName() != "minigate_platform_api_calls_total" {
				continue
			}
		metrics:
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if want[l.GetName()] != l.GetValue() {
						continue metrics
					}
				}
				return m.GetCounter().GetValue()
			}
		}
		return 0
	}
	before := map[string]float64{
		"jsapi_prepay/ok": count("jsapi_prepay", "ok"), "close_order/ok": count("close_order", "ok"),
		"query_order/platform_error": count("query_order", "platform_error"),
	}
	no := "M" + payHex(8)
	e.prepay(t, no, 100)
	if err := e.pay.Close(context.Background(), no); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay.Query(context.Background(), "nope"+payHex(4)); err == nil {
		t.Fatal("query of an unknown order succeeded")
	}
	for key, was := range before {
		api, outcome, _ := strings.Cut(key, "/")
		if got := count(api, outcome); got != was+1 {
			t.Errorf("%s: counter moved from %v to %v, want +1", key, was, got)
		}
	}
}

func TestPayAcks(t *testing.T) {
	t.Parallel()
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	if ack := e.pay.NotifyAck(); ack.Status != http.StatusNoContent || len(ack.Body) != 0 {
		t.Errorf("ack %+v", ack)
	}
	nack := e.pay.NotifyNack(`store "down"`)
	var body map[string]string
	if err := json.Unmarshal(nack.Body, &body); err != nil || nack.Status != http.StatusInternalServerError ||
		body["code"] != "FAIL" || body["message"] != `store "down"` || !bytes.HasPrefix(nack.Body, []byte("{")) {
		t.Errorf("nack %d %s", nack.Status, nack.Body)
	}
}

func BenchmarkPayParseNotification(b *testing.B) {
	e := paySetup(b, sandbox.KeyModePublicKey, nil)
	no := "B" + payHex(8)
	if _, err := e.pay.Prepay(context.Background(), e.prepayRequest(no, 100)); err != nil {
		b.Fatal(err)
	}
	if _, err := e.sim.Pay(context.Background(), e.sb, no, sandbox.Faults{}); err != nil {
		b.Fatal(err)
	}
	req := (<-e.got).req
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.pay.ParseNotification(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPayPrepayAndParams(b *testing.B) {
	e := paySetup(b, sandbox.KeyModePublicKey, nil)
	b.ResetTimer()
	for b.Loop() {
		pp, err := e.pay.Prepay(context.Background(), e.prepayRequest("B"+payHex(8), 100))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.pay.PayParams(context.Background(), pp); err != nil {
			b.Fatal(err)
		}
	}
}
