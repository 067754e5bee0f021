package alipay_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	sdk "github.com/smartwalle/alipay/v3"
	"github.com/smartwalle/nsign"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/orders"
)

// fakeGateway answers every call with reply(form); it signs with its own
// Alipay key, which the adapter under test trusts.
type fakeGateway struct {
	URL     string
	key     *rsa.PrivateKey
	mu      sync.Mutex
	last    url.Values
	reply   func(form url.Values) string
	delayed time.Duration
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	g := &fakeGateway{key: mustKey(t)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(raw))
		g.mu.Lock()
		g.last = form
		reply, delay := g.reply, g.delayed
		g.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		_, _ = io.WriteString(w, reply(form))
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL + "/gateway.do"
	return g
}

// signed renders {"<method>_response": value, "sign": sig(value)}.
func (g *fakeGateway) signed(method, value string) string {
	h := sha256.Sum256([]byte(value))
	sig, _ := rsa.SignPKCS1v15(rand.Reader, g.key, crypto.SHA256, h[:])
	return `{"` + regexp.MustCompile(`\.`).ReplaceAllString(method, "_") + `_response":` + value +
		`,"sign":"` + base64.StdEncoding.EncodeToString(sig) + `"}`
}

func (g *fakeGateway) pay(t *testing.T, timeout time.Duration, aesKey string) (*alipay.Pay, *config.App) {
	t.Helper()
	app := &config.App{ID: "fake", Platform: config.Alipay, AppID: "2021000000000055", PrivateKey: mustKey(t),
		AlipayPublicKey: &g.key.PublicKey, Messages: config.Messages{AESKey: aesKey}}
	p, err := alipay.NewPay(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: g.URL}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return p, app
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	g := newFakeGateway(t)
	p, _ := g.pay(t, 10*time.Second, "")
	const m = "alipay.trade.query"
	cases := []struct {
		name   string
		reply  string
		reason adapters.Reason
		code   string
	}{
		{"service unavailable", g.signed(m, `{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknown-error"}`), adapters.ReasonBusy, "20000"},
		{"ACQ.SYSTEM_ERROR", g.signed(m, `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}`), adapters.ReasonBusy, "40004"},
		{"invalid signature", g.signed(m, `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature"}`), adapters.ReasonAuth, "40002"},
		{"insufficient permissions", g.signed(m, `{"code":"40006","msg":"Insufficient Permissions","sub_code":"isv.insufficient-isv-permissions"}`), adapters.ReasonAuth, "40006"},
		{"missing parameter", g.signed(m, `{"code":"40001","msg":"Missing Required Arguments","sub_code":"isv.missing-method"}`), adapters.ReasonInvalidRequest, "40001"},
		{"invalid parameter", g.signed(m, `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-parameter"}`), adapters.ReasonInvalidRequest, "40002"},
		{"not found", g.signed(m, `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}`), adapters.ReasonNotFound, "40004"},
		{"has success", g.signed(m, `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_HAS_SUCCESS"}`), adapters.ReasonConflict, "40004"},
		{"has close", g.signed(m, `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_HAS_CLOSE"}`), adapters.ReasonConflict, "40004"},
		{"status error", g.signed(m, `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_STATUS_ERROR"}`), adapters.ReasonConflict, "40004"},
		{"other business failure", g.signed(m, `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.BUYER_BALANCE_NOT_ENOUGH"}`), adapters.ReasonRejected, "40004"},
		{"call limited", g.signed(m, `{"code":"40005","msg":"Call Limited","sub_code":"aop.ACL_LIMIT"}`), adapters.ReasonRateLimited, "40005"},
		{"wrong app_cert_sn", `{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.app-cert-not-exist"}}`, adapters.ReasonAuth, "40002"},
		{"wrong root SN", `{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-alipay-root-cert-sn"}}`, adapters.ReasonAuth, "40002"},
		{"a public-key-mode answer naming a certificate", `{"alipay_trade_query_response":{"code":"10000","msg":"Success"},"alipay_cert_sn":"0123456789abcdef0123456789abcdef","sign":"` +
			base64.StdEncoding.EncodeToString(make([]byte, 256)) + `"}`, adapters.ReasonBadResponse, ""},
		{"error_response", `{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}`, adapters.ReasonAuth, "40002"},
		{"forged signature", `{"alipay_trade_query_response":{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS","total_amount":"1.00"},"sign":"` +
			base64.StdEncoding.EncodeToString(make([]byte, 256)) + `"}`, adapters.ReasonBadResponse, ""},
		{"unsigned success", `{"alipay_trade_query_response":{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS","total_amount":"1.00"}}`, adapters.ReasonBadResponse, ""},
		{"null", `{"alipay_trade_query_response":null,"sign":"AAAA"}`, adapters.ReasonBadResponse, ""},
		{"not JSON", `<html>502 Bad Gateway</html>`, adapters.ReasonBadResponse, ""},
		{"other method's response", g.signed("alipay.trade.close", `{"code":"10000","msg":"Success"}`), adapters.ReasonBadResponse, ""},
		{"unknown trade_status", g.signed(m, `{"code":"10000","msg":"Success","trade_status":"TRADE_WEIRD","total_amount":"1.00"}`), adapters.ReasonBadResponse, ""},
		{"float-ish amount", g.signed(m, `{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS","total_amount":"1.0E2"}`), adapters.ReasonBadResponse, ""},
	}
	for _, c := range cases {
		g.mu.Lock()
		g.reply = func(url.Values) string { return c.reply }
		g.mu.Unlock()
		_, err := p.Query(context.Background(), "o1")
		if got := reason(t, err); got != c.reason {
			t.Errorf("%s: reason %s (%v), want %s", c.name, got, err, c.reason)
			continue
		}
		if pe, _ := adapters.AsPlatformError(err); pe.Code != c.code || pe.API != m {
			t.Errorf("%s: code %q api %q", c.name, pe.Code, pe.API)
		}
	}
	// A long sub_msg (Alipay echoes the signed string) is cut.
	g.mu.Lock()
	long := make([]byte, 2000)
	for i := range long {
		long[i] = 'x'
	}
	g.reply = func(url.Values) string {
		return g.signed(m, `{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"`+string(long)+`"}`)
	}
	g.mu.Unlock()
	_, err := p.Query(context.Background(), "o1")
	if pe, _ := adapters.AsPlatformError(err); pe == nil || len(pe.Message) > 300 {
		t.Fatalf("long sub_msg kept: %v", err)
	}
}

func TestTransportErrors(t *testing.T) {
	t.Parallel()
	// Unreachable: a port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	k := mustKey(t)
	app := &config.App{ID: "x", Platform: config.Alipay, AppID: "2021000000000056", PrivateKey: k, AlipayPublicKey: &k.PublicKey}
	p, err := alipay.NewPay(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: "http://" + addr + "/gateway.do"}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Query(context.Background(), "o1"); reason(t, err) != adapters.ReasonUnreachable {
		t.Fatalf("unreachable gateway: %v", err)
	}

	// Timeout: the gateway answers after the client gave up.
	g := newFakeGateway(t)
	g.reply = func(url.Values) string { return g.signed("alipay.trade.query", `{"code":"10000","msg":"Success"}`) }
	g.delayed = 2 * time.Second
	slow, _ := g.pay(t, 100*time.Millisecond, "")
	_, err = slow.Query(context.Background(), "o1")
	if reason(t, err) != adapters.ReasonTimeout {
		t.Fatalf("slow gateway: %v", err)
	}
	if pe, _ := adapters.AsPlatformError(err); !pe.Retryable() {
		t.Fatal("a timeout is not retryable")
	}
}

func TestEncryptedGarbageDoesNotPanic(t *testing.T) {
	t.Parallel()
	g := newFakeGateway(t)
	// "YWJj" is 3 bytes: not whole AES blocks, which panics inside the SDK.
	g.reply = func(url.Values) string { return g.signed("alipay.trade.query", `"YWJj"`) }
	p, _ := g.pay(t, 10*time.Second, base64.StdEncoding.EncodeToString(make([]byte, 16)))
	if _, err := p.Query(context.Background(), "o1"); reason(t, err) != adapters.ReasonBadResponse {
		t.Fatalf("garbage ciphertext: %v", err)
	}
}

// TestRequestSignature checks what minigate sends: the parameters, and a
// signature that verifies with the app public key both with the SDK's
// verifier stack and with a verifier written here.
func TestRequestSignature(t *testing.T) {
	t.Parallel()
	g := newFakeGateway(t)
	g.reply = func(url.Values) string {
		return g.signed("alipay.trade.create", `{"code":"10000","msg":"Success","out_trade_no":"ord_sig","trade_no":"2024050122001400000000000001"}`)
	}
	p, app := g.pay(t, 10*time.Second, "")
	expires := time.Date(2024, 5, 1, 4, 30, 0, 0, time.UTC)
	pre, err := p.Prepay(context.Background(), orders.PrepayRequest{
		OutTradeNo: "ord_sig", Description: "咖啡 ×2", Amount: 1234, Attach: "a=b&c",
		Payer: orders.Payer{AlipayUserID: "2088000000000001"}, NotifyURL: "https://pay.example.com/callbacks/x/payments", ExpiresAt: expires,
	})
	if err != nil || pre.PrepayID != "2024050122001400000000000001" {
		t.Fatalf("prepay: %+v, %v", pre, err)
	}
	g.mu.Lock()
	form := g.last
	g.mu.Unlock()

	want := map[string]string{"app_id": app.AppID, "method": "alipay.trade.create", "charset": "utf-8", "sign_type": "RSA2",
		"version": "1.0", "format": "JSON", "notify_url": "https://pay.example.com/callbacks/x/payments"}
	for k, v := range want {
		if form.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, form.Get(k), v)
		}
	}
	ts, err := time.ParseInLocation("2006-01-02 15:04:05", form.Get("timestamp"), time.FixedZone("CST", 8*3600))
	if err != nil || time.Since(ts).Abs() > time.Minute {
		t.Errorf("timestamp %q is not Beijing time now", form.Get("timestamp"))
	}
	var biz map[string]any
	if err := json.Unmarshal([]byte(form.Get("biz_content")), &biz); err != nil {
		t.Fatalf("biz_content: %v", err)
	}
	for k, v := range map[string]string{"out_trade_no": "ord_sig", "total_amount": "12.34", "subject": "咖啡 ×2",
		"product_code": "JSAPI_PAY", "buyer_id": "2088000000000001", "time_expire": "2024-05-01 12:30:00", "passback_params": "a%3Db%26c"} {
		if biz[k] != v {
			t.Errorf("biz_content.%s = %v, want %q", k, biz[k], v)
		}
	}

	// The SDK's own verifier (encoder + RSA method), with the app public key.
	v := nsign.New(nsign.WithMethod(nsign.NewRSAMethod(crypto.SHA256, nil, &app.PrivateKey.PublicKey)), nsign.WithEncoder(sdk.Encoder{}))
	sig, _ := base64.StdEncoding.DecodeString(form.Get("sign"))
	if err := v.VerifyValues(form, sig, nsign.WithIgnore("sign")); err != nil {
		t.Fatalf("the SDK's verifier rejects minigate's request: %v", err)
	}
	// And an independent one; sign_type is part of the signed content.
	if err := verifyForm(&app.PrivateKey.PublicKey, form, "sign"); err != nil {
		t.Fatalf("independent verification: %v", err)
	}
	if err := verifyForm(&app.PrivateKey.PublicKey, form, "sign", "sign_type"); err == nil {
		t.Fatal("request signature verifies without sign_type too")
	}
}

// TestObserve checks one metrics observation per platform call (not
// parallel: the counters are process-wide).
func TestObserve(t *testing.T) {
	g := newFakeGateway(t)
	g.reply = func(form url.Values) string {
		if form.Get("method") == "alipay.trade.refund" {
			return g.signed("alipay.trade.refund", `{"code":"10000","msg":"Success","fund_change":"N","refund_fee":"1.00"}`)
		}
		return g.signed("alipay.trade.fastpay.refund.query", `{"code":"10000","msg":"Success","refund_status":"REFUND_SUCCESS","refund_amount":"1.00"}`)
	}
	p, _ := g.pay(t, 10*time.Second, "")
	count := func(api, outcome string) float64 {
		var m dto.Metric
		if err := metrics.PlatformCalls.WithLabelValues(alipay.Platform, api, outcome).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	refunds, queries := count("alipay.trade.refund", "ok"), count("alipay.trade.fastpay.refund.query", "ok")
	ref, err := p.Refund(context.Background(), orders.RefundRequest{OutTradeNo: "o", OutRefundNo: "r", Amount: 100, Total: 100})
	if err != nil || ref.State != orders.RefundSucceeded || ref.Amount != 100 {
		t.Fatalf("refund confirmed by query: %+v, %v", ref, err)
	}
	if count("alipay.trade.refund", "ok")-refunds != 1 || count("alipay.trade.fastpay.refund.query", "ok")-queries != 1 {
		t.Fatal("want one observation per call")
	}
	// A refund whose confirming query fails stays pending, without error.
	g.mu.Lock()
	g.reply = func(form url.Values) string {
		if form.Get("method") == "alipay.trade.refund" {
			return g.signed("alipay.trade.refund", `{"code":"10000","msg":"Success","fund_change":"N"}`)
		}
		return `oops`
	}
	g.mu.Unlock()
	failed := count("alipay.trade.fastpay.refund.query", "platform_error")
	ref, err = p.Refund(context.Background(), orders.RefundRequest{OutTradeNo: "o", OutRefundNo: "r", Amount: 100, Total: 100})
	if err != nil || ref.State != orders.RefundPending {
		t.Fatalf("refund with a failed confirmation: %+v, %v", ref, err)
	}
	if count("alipay.trade.fastpay.refund.query", "platform_error")-failed != 1 {
		t.Fatal("the failed query was not observed")
	}
}
