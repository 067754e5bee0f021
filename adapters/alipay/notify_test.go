package alipay_test

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	sdk "github.com/smartwalle/alipay/v3"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

// A published RSA2 example: a real trade_status_sync notification, its
// signature and the Alipay public key that verifies it, from the test suite
// of Alipay's Node.js SDK.
const vectorAlipayKey = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB"

func vectorForm() url.Values {
	v := url.Values{}
	for k, x := range map[string]string{
		"gmt_create": "2019-08-15 15:56:22", "charset": "utf-8", "seller_email": "z97-yuquerevenue@service.aliyun.com",
		"subject":  "语雀空间 500人规模",
		"sign":     "QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwrVgOs08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyHPX5Gm4ELNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P0y095uQcDdK0YjCh4x7wVSov+lrmOQ==",
		"buyer_id": "2088102534368455", "invoice_amount": "0.10", "notify_id": "2019081500222155624068450559358070",
		"fund_bill_list": `[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]`,
		"notify_type":    "trade_status_sync", "trade_status": "TRADE_SUCCESS", "receipt_amount": "0.10", "buyer_pay_amount": "0.10",
		"sign_type": "RSA2", "app_id": "2019073166072302", "seller_id": "2088531891668739", "gmt_payment": "2019-08-15 15:56:24",
		"notify_time": "2019-08-15 15:56:25", "version": "1.0", "out_trade_no": "20190815155618536-564-57", "total_amount": "0.10",
		"trade_no": "2019081522001468450512505578", "auth_app_id": "2019073166072302", "buyer_logon_id": "xud***@126.com", "point_amount": "0.00",
	} {
		v.Set(k, x)
	}
	return v
}

func parsePublicKey(t testing.TB, b64 string) *rsa.PublicKey {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PublicKey)
}

// vectorPay is a Pay for the published example's app and seller.
func vectorPay(t *testing.T, seller string) *alipay.Pay {
	t.Helper()
	k, _ := testenv.Key()
	app := &config.App{ID: "vector", Platform: config.Alipay, AppID: "2019073166072302", PrivateKey: k,
		AlipayPublicKey: parsePublicKey(t, vectorAlipayKey), Pay: &config.Pay{SellerID: seller}}
	p, err := alipay.NewPay(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: "http://127.0.0.1:1/gateway.do"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func formRequest(v url.Values) webhooks.Request {
	return webhooks.Request{Method: http.MethodPost, Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}},
		Body: []byte(v.Encode()), ReceivedAt: time.Now()}
}

func TestParseNotificationPublishedVector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := vectorPay(t, "2088531891668739")
	n, err := p.ParseNotification(ctx, formRequest(vectorForm()))
	if err != nil {
		t.Fatalf("the published notification is rejected: %v", err)
	}
	want := orders.Transaction{
		AppID: "2019073166072302", MchID: "2088531891668739", OutTradeNo: "20190815155618536-564-57",
		TransactionID: "2019081522001468450512505578", State: orders.PaymentPaid, Amount: 10, Currency: "CNY",
		PayerID: "2088102534368455", PaidAt: time.Date(2019, 8, 15, 7, 56, 24, 0, time.UTC),
	}
	got := *n.Payload.Transaction
	if !got.PaidAt.Equal(want.PaidAt) {
		t.Fatalf("paid at %v, want %v", got.PaidAt, want.PaidAt)
	}
	got.PaidAt = want.PaidAt
	if got != want || n.Payload.Kind != orders.NotifyPayment || n.DedupKey != "2019081500222155624068450559358070|TRADE_SUCCESS" {
		t.Fatalf("parsed %+v %+v", n, got)
	}

	cases := []struct {
		name   string
		mutate func(v url.Values)
		reason webhooks.RejectReason
	}{
		{"tampered amount", func(v url.Values) { v.Set("total_amount", "100.00") }, webhooks.RejectBadSignature},
		{"added parameter", func(v url.Values) { v.Set("refund_fee", "0.10") }, webhooks.RejectBadSignature},
		{"removed parameter", func(v url.Values) { v.Del("buyer_id") }, webhooks.RejectBadSignature},
		{"no sign", func(v url.Values) { v.Del("sign") }, webhooks.RejectMissingSignature},
		{"sign not base64", func(v url.Values) { v.Set("sign", "%%%") }, webhooks.RejectBadSignature},
		{"sign_type RSA", func(v url.Values) { v.Set("sign_type", "RSA") }, webhooks.RejectUnsupported},
		{"certificate mode", func(v url.Values) { v.Set("alipay_cert_sn", "abc") }, webhooks.RejectUnsupported},
		{"gbk", func(v url.Values) { v.Set("charset", "gbk") }, webhooks.RejectUnsupported},
	}
	for _, c := range cases {
		v := vectorForm()
		c.mutate(v)
		if _, err := p.ParseNotification(ctx, formRequest(v)); rejected(t, err) != c.reason {
			t.Errorf("%s: %v, want %s", c.name, err, c.reason)
		}
	}
	// sign_type is not signed in trade notifications: changing it to
	// another spelling of RSA2 is not possible, but dropping an empty
	// parameter must not matter — Alipay does not sign empty values.
	v := vectorForm()
	v.Set("body", "")
	if _, err := p.ParseNotification(ctx, formRequest(v)); err != nil {
		t.Fatalf("an empty extra parameter breaks verification: %v", err)
	}
	// The same example through the SDK's own verifier, for reference.
	c, _ := sdk.New("2019073166072302", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(mustKey(t))})), true)
	if err := c.LoadAliPayPublicKey(vectorAlipayKey); err != nil {
		t.Fatal(err)
	}
	if err := c.VerifySign(ctx, vectorForm()); err != nil {
		t.Fatalf("the SDK rejects the published example: %v", err)
	}

	// Foreign seller and app, validly signed, are refused by identity.
	if _, err := vectorPay(t, "2088000000000001").ParseNotification(ctx, formRequest(vectorForm())); rejected(t, err) != webhooks.RejectForeignMerchant {
		t.Fatalf("foreign seller: %v", err)
	}
	if _, err := vectorPay(t, "").ParseNotification(ctx, formRequest(vectorForm())); err != nil {
		t.Fatalf("no seller configured: %v", err)
	}
}

func mustKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := testenv.Key()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// craftEnv signs notifications with the simulator's Alipay key for e's app.
func craft(t testing.TB, key *rsa.PrivateKey, fields map[string]string) url.Values {
	t.Helper()
	v := url.Values{}
	for k, x := range fields {
		v.Set(k, x)
	}
	v.Set("sign_type", "RSA2")
	signForm(t, key, v, "sign", "sign_type")
	return v
}

func TestParseNotificationShapes(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	ctx := context.Background()
	key := e.sbApp.Alipay.AlipayKey
	base := func() map[string]string {
		return map[string]string{
			"notify_type": "trade_status_sync", "notify_id": "n1", "app_id": e.cfg.AppID, "seller_id": e.cfg.Pay.SellerID,
			"out_trade_no": "o1", "trade_no": "t1", "total_amount": "12.34", "trade_status": "TRADE_SUCCESS",
			"gmt_payment": "2024-05-01 12:00:00", "buyer_open_id": "open-1", "charset": "utf-8",
		}
	}
	cases := []struct {
		name   string
		mutate func(m map[string]string)
		kind   orders.NotificationKind
		state  orders.PaymentState
		reject webhooks.RejectReason
		id     string
	}{
		{name: "paid", kind: orders.NotifyPayment, state: orders.PaymentPaid, id: "n1|TRADE_SUCCESS"},
		{name: "finished", mutate: func(m map[string]string) { m["trade_status"] = "TRADE_FINISHED" }, kind: orders.NotifyPayment, state: orders.PaymentPaid, id: "n1|TRADE_FINISHED"},
		{name: "waiting", mutate: func(m map[string]string) { m["trade_status"] = "WAIT_BUYER_PAY"; delete(m, "gmt_payment") }, kind: orders.NotifyPayment, state: orders.PaymentPending},
		{name: "closed unpaid", mutate: func(m map[string]string) { m["trade_status"] = "TRADE_CLOSED" }, kind: orders.NotifyPayment, state: orders.PaymentClosed},
		{name: "payment with refund_fee 0.00", mutate: func(m map[string]string) { m["refund_fee"] = "0.00" }, kind: orders.NotifyPayment, state: orders.PaymentPaid},
		{name: "refund", mutate: func(m map[string]string) {
			m["refund_fee"], m["gmt_refund"], m["out_biz_no"] = "1.00", "2024-05-01 13:00:00.123", "rf9"
		}, kind: orders.NotifyRefund, id: "n1|TRADE_SUCCESS|rf9"},
		{name: "refund without out_biz_no", mutate: func(m map[string]string) { m["refund_fee"] = "1.00" }, kind: orders.NotifyRefund, id: "n1|TRADE_SUCCESS|o1"},
		{name: "other currency", mutate: func(m map[string]string) { m["trans_currency"] = "USD" }, kind: orders.NotifyPayment, state: orders.PaymentPaid},
		{name: "unknown status", mutate: func(m map[string]string) { m["trade_status"] = "TRADE_WEIRD" }, reject: webhooks.RejectMalformed},
		{name: "amount with 3 decimals", mutate: func(m map[string]string) { m["total_amount"] = "1.234" }, reject: webhooks.RejectMalformed},
		{name: "float-ish amount", mutate: func(m map[string]string) { m["total_amount"] = "1e3" }, reject: webhooks.RejectMalformed},
		{name: "bad refund_fee", mutate: func(m map[string]string) { m["refund_fee"] = "-1" }, reject: webhooks.RejectMalformed},
		{name: "bad gmt_payment", mutate: func(m map[string]string) { m["gmt_payment"] = "yesterday" }, reject: webhooks.RejectMalformed},
		{name: "no notify_id", mutate: func(m map[string]string) { delete(m, "notify_id") }, reject: webhooks.RejectMalformed},
		{name: "no out_trade_no", mutate: func(m map[string]string) { delete(m, "out_trade_no") }, reject: webhooks.RejectMalformed},
		{name: "other notify_type", mutate: func(m map[string]string) { m["notify_type"] = "servicemarket_order_notify" }, reject: webhooks.RejectUnsupported},
		{name: "foreign app", mutate: func(m map[string]string) { m["app_id"] = "2021000000000009" }, reject: webhooks.RejectForeignApp},
	}
	for _, c := range cases {
		m := base()
		if c.mutate != nil {
			c.mutate(m)
		}
		n, err := e.pay.ParseNotification(ctx, formRequest(craft(t, key, m)))
		if c.reject != "" {
			if got := rejected(t, err); got != c.reject {
				t.Errorf("%s: rejected as %s (%v), want %s", c.name, got, err, c.reject)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if n.Payload.Kind != c.kind || (c.id != "" && n.DedupKey != c.id) {
			t.Errorf("%s: kind %s id %s", c.name, n.Payload.Kind, n.DedupKey)
		}
		if c.kind == orders.NotifyPayment && n.Payload.Transaction.State != c.state {
			t.Errorf("%s: state %s, want %s", c.name, n.Payload.Transaction.State, c.state)
		}
		if c.kind == orders.NotifyRefund && (n.Payload.Refund.Total != 1234 || n.Payload.Refund.State != orders.RefundSucceeded) {
			t.Errorf("%s: refund %+v", c.name, n.Payload.Refund)
		}
	}

	// Transport-level malformations.
	good := craft(t, key, base())
	for name, req := range map[string]webhooks.Request{
		"GET":          {Method: http.MethodGet, Body: []byte(good.Encode())},
		"empty":        {Method: http.MethodPost},
		"json":         {Method: http.MethodPost, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"sign":"x"}`)},
		"repeated key": {Method: http.MethodPost, Body: []byte(good.Encode() + "&app_id=" + e.cfg.AppID)},
		"bad escape":   {Method: http.MethodPost, Body: []byte("a=%zz&" + good.Encode())},
		"huge":         {Method: http.MethodPost, Body: []byte(good.Encode() + "&pad=" + strings.Repeat("x", 70<<10))},
	} {
		if _, err := e.pay.ParseNotification(ctx, req); rejected(t, err) != webhooks.RejectMalformed {
			t.Errorf("%s: %v, want malformed", name, err)
		}
	}
}

// FuzzParseNotification: whatever the body, the parser never panics,
// refuses with a *webhooks.VerifyError, and accepts only what carries a
// valid Alipay signature.
func FuzzParseNotification(f *testing.F) {
	alipayKey, _ := testenv.Key()
	appKey, _ := testenv.Key()
	app := &config.App{ID: "fuzz", Platform: config.Alipay, AppID: "2021000000000077", PrivateKey: appKey,
		AlipayPublicKey: &alipayKey.PublicKey, Pay: &config.Pay{SellerID: "2088000000000077"}}
	p, err := alipay.NewPay(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: "http://127.0.0.1:1/gateway.do"}})
	if err != nil {
		f.Fatal(err)
	}
	fields := map[string]string{
		"notify_type": "trade_status_sync", "notify_id": "n1", "app_id": app.AppID, "seller_id": "2088000000000077",
		"out_trade_no": "o1", "trade_no": "t1", "total_amount": "0.01", "trade_status": "TRADE_SUCCESS",
	}
	f.Add([]byte(craft(f, alipayKey, fields).Encode()))
	fields["out_biz_no"], fields["refund_fee"] = "r1", "0.01"
	f.Add([]byte(craft(f, alipayKey, fields).Encode()))
	f.Add([]byte(vectorForm().Encode()))
	f.Add([]byte("sign=AAAA&sign_type=RSA2&app_id=2021000000000077"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := p.ParseNotification(context.Background(), webhooks.Request{Method: http.MethodPost, Body: body})
		if err != nil {
			if _, ok := webhooks.AsVerifyError(err); !ok {
				t.Fatalf("error is not a VerifyError: %v", err)
			}
			return
		}
		v, perr := url.ParseQuery(string(body))
		if perr != nil || n.Payload == nil || verifyForm(&alipayKey.PublicKey, v, "sign", "sign_type") != nil {
			t.Fatalf("accepted a body without a valid signature: %q", body)
		}
	})
}

func BenchmarkParseNotification(b *testing.B) {
	k, _ := testenv.Key()
	app := &config.App{ID: "bench", Platform: config.Alipay, AppID: "2019073166072302", PrivateKey: k,
		AlipayPublicKey: parsePublicKey(b, vectorAlipayKey), Pay: &config.Pay{SellerID: "2088531891668739"}}
	p, err := alipay.NewPay(app, adapters.Options{Endpoints: config.Endpoints{AlipayGateway: "http://127.0.0.1:1/gateway.do"}})
	if err != nil {
		b.Fatal(err)
	}
	req := formRequest(vectorForm())
	b.ResetTimer()
	for range b.N {
		if _, err := p.ParseNotification(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
