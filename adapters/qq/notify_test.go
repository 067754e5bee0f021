package qq

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

const (
	testAppID  = "1112345678"
	testMchID  = "1900000109"
	testAPIKey = "8934e7d15453e97507ef794cf7b0519d"
)

func testPay(t testing.TB) *Pay {
	t.Helper()
	p, err := NewPay(&config.App{ID: "shop-qq", Platform: config.QQ, AppID: testAppID, AppSecret: "s",
		Pay: &config.Pay{MchID: testMchID, APIKey: testAPIKey}}, adapters.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// paidFields is a payment notification as QQ wallet sends it, unsigned.
func paidFields() map[string]string {
	return map[string]string{
		"appid": testAppID, "mch_id": testMchID, "nonce_str": "f61bf55a116ef0c822122956de9b6e93",
		"trade_type": TradeType, "trade_state": "SUCCESS", "bank_type": "BALANCE", "fee_type": "CNY",
		"total_fee": "888", "cash_fee": "888", "transaction_id": "1900000109201607211903715555",
		"out_trade_no": "20150806125346", "attach": "cart=7", "time_end": "20160721190412",
		"openid": "0A1B2C3D4E5F",
	}
}

func signedBody(f map[string]string, key string) []byte {
	f = maps.Clone(f)
	f["sign"] = sign(f, key)
	return encodeXML(f)
}

func parse(t testing.TB, p *Pay, body []byte) (webhooks.Opened[*orders.Notification], error) {
	t.Helper()
	return p.ParseNotification(context.Background(), webhooks.Request{Method: http.MethodPost, Body: body})
}

func TestParseNotification(t *testing.T) {
	t.Parallel()
	p := testPay(t)
	n, err := parse(t, p, signedBody(paidFields(), testAPIKey))
	if err != nil {
		t.Fatal(err)
	}
	want := orders.Transaction{
		AppID: testAppID, MchID: testMchID, OutTradeNo: "20150806125346",
		TransactionID: "1900000109201607211903715555", State: orders.PaymentPaid, Amount: 888, Currency: "CNY",
		PayerID: "0A1B2C3D4E5F", PaidAt: time.Date(2016, 7, 21, 11, 4, 12, 0, time.UTC),
	}
	got := *n.Payload.Transaction
	if !got.PaidAt.Equal(want.PaidAt) {
		t.Fatalf("paid at %v, want %v (Beijing time)", got.PaidAt, want.PaidAt)
	}
	got.PaidAt = want.PaidAt
	if got != want {
		t.Fatalf("transaction = %+v, want %+v", got, want)
	}
	if n.DedupKey != "1900000109201607211903715555:SUCCESS" || n.Payload.Kind != orders.NotifyPayment {
		t.Fatalf("notification = %+v", n)
	}
}

func TestParseNotificationRejects(t *testing.T) {
	t.Parallel()
	p := testPay(t)
	with := func(k, v string) []byte {
		f := paidFields()
		if v == "" {
			delete(f, k)
		} else {
			f[k] = v
		}
		return signedBody(f, testAPIKey)
	}
	valid := signedBody(paidFields(), testAPIKey)
	tests := []struct {
		name string
		body []byte
		want webhooks.RejectReason
	}{
		{"empty", nil, webhooks.RejectMalformed},
		{"not xml", []byte("total_fee=1&sign=x"), webhooks.RejectMalformed},
		{"oversize", append(valid, make([]byte, maxNotificationBytes)...), webhooks.RejectMalformed},
		{"doctype", append([]byte(`<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>`), valid...), webhooks.RejectMalformed},
		{"unsigned", encodeXML(paidFields()), webhooks.RejectMissingSignature},
		{"signed with another key", signedBody(paidFields(), "0"+testAPIKey[1:]), webhooks.RejectBadSignature},
		{"amount changed after signing", []byte(strings.Replace(string(valid), "<total_fee>888<", "<total_fee>1<", 1)), webhooks.RejectBadSignature},
		{"field added after signing", []byte(strings.Replace(string(valid), "</xml>", "<refund_fee>888</refund_fee></xml>", 1)), webhooks.RejectBadSignature},
		{"duplicated field", []byte(strings.Replace(string(valid), "</xml>", "<total_fee>1</total_fee></xml>", 1)), webhooks.RejectMalformed},
		{"hmac sign_type", with("sign_type", "HMAC-SHA256"), webhooks.RejectUnsupported},
		{"foreign merchant", with("mch_id", "1230000109"), webhooks.RejectForeignMerchant},
		{"no merchant", with("mch_id", ""), webhooks.RejectForeignMerchant},
		{"foreign app", with("appid", "1104606907"), webhooks.RejectForeignApp},
		{"no out_trade_no", with("out_trade_no", ""), webhooks.RejectMalformed},
		{"no transaction_id", with("transaction_id", ""), webhooks.RejectMalformed},
		{"no total_fee", with("total_fee", ""), webhooks.RejectMalformed},
		{"negative total_fee", with("total_fee", "-1"), webhooks.RejectMalformed},
		{"unknown trade_state", with("trade_state", "PAID"), webhooks.RejectMalformed},
		{"bad time_end", with("time_end", "2016-07-21"), webhooks.RejectMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n, err := parse(t, p, tt.body)
			ve, ok := webhooks.AsVerifyError(err)
			if !ok || ve.Reason != tt.want {
				t.Fatalf("got %+v, %v; want rejection %s", n, err, tt.want)
			}
			if strings.Contains(ve.Detail, testAPIKey) {
				t.Fatal("the rejection detail leaks the API key")
			}
		})
	}
}

// TestParseNotificationWithoutAppID accepts a signed notification without
// appid (appid is optional in QQ wallet requests).
func TestParseNotificationWithoutAppID(t *testing.T) {
	t.Parallel()
	f := paidFields()
	delete(f, "appid")
	n, err := parse(t, testPay(t), signedBody(f, testAPIKey))
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload.Transaction.AppID != testAppID {
		t.Fatalf("app id %q", n.Payload.Transaction.AppID)
	}
}

func TestTradeAndRefundStates(t *testing.T) {
	t.Parallel()
	trade := map[string]orders.PaymentState{
		"SUCCESS": orders.PaymentPaid, "REFUND": orders.PaymentRefunded, "NOTPAY": orders.PaymentPending,
		"USERPAYING": orders.PaymentPending, "CLOSED": orders.PaymentClosed, "REVOKED": orders.PaymentClosed,
		"PAYERROR": orders.PaymentFailed,
	}
	for in, want := range trade {
		if got, ok := tradeState(in); !ok || got != want {
			t.Errorf("tradeState(%s) = %s, %t; want %s", in, got, ok, want)
		}
	}
	if _, ok := tradeState("success"); ok {
		t.Error("tradeState accepted a lowercase state")
	}
	refund := map[string]orders.RefundState{
		"SUCCESS": orders.RefundSucceeded, "PROCESSING": orders.RefundPending, "NOTSURE": orders.RefundPending,
		"FAIL": orders.RefundFailed, "CHANGE": orders.RefundFailed,
	}
	for in, want := range refund {
		if got, ok := refundState(in); !ok || got != want {
			t.Errorf("refundState(%s) = %s, %t; want %s", in, got, ok, want)
		}
	}
	if _, ok := refundState(""); ok {
		t.Error("refundState accepted an empty status")
	}
}

func TestRefundFromQuery(t *testing.T) {
	t.Parallel()
	resp := map[string]string{
		"out_trade_no": "O1", "transaction_id": "T1", "total_fee": "900",
		"out_refund_no_0": "R0", "refund_id_0": "I0", "refund_fee_0": "100", "refund_status_0": "SUCCESS",
		"out_refund_no_1": "R1", "refund_id_1": "I1", "refund_fee_1": "200", "refund_status_1": "PROCESSING",
	}
	r, err := refundFromQuery(resp, "O1", "R1")
	if err != nil {
		t.Fatal(err)
	}
	want := orders.Refund{OutTradeNo: "O1", TransactionID: "T1", OutRefundNo: "R1", RefundID: "I1",
		State: orders.RefundPending, Amount: 200, Total: 900}
	if r != want {
		t.Fatalf("refund = %+v, want %+v", r, want)
	}
	for name, tt := range map[string]struct{ trade, refund string }{
		"another order":    {"O2", "R1"},
		"refund not there": {"O1", "R7"},
	} {
		if _, err := refundFromQuery(resp, tt.trade, tt.refund); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad := maps.Clone(resp)
	bad["refund_status_1"] = "WHATEVER"
	if _, err := refundFromQuery(bad, "O1", "R1"); err == nil {
		t.Error("unknown refund_status accepted")
	}
}

func TestNewPay(t *testing.T) {
	t.Parallel()
	app := func(p config.Pay) *config.App {
		return &config.App{ID: "shop-qq", Platform: config.QQ, AppID: testAppID, AppSecret: "s", Pay: &p}
	}
	t.Run("real endpoints: refunds go to the api host", func(t *testing.T) {
		p, err := NewPay(app(config.Pay{MchID: testMchID, APIKey: testAPIKey}), adapters.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if p.base != "https://qpay.qq.com" || p.refundBase != "https://api.qpay.qq.com" {
			t.Fatalf("base %s, refund base %s", p.base, p.refundBase)
		}
		if p.opUserID != "" || p.opUserPasswd != "" {
			t.Fatal("operator set without a password")
		}
	})
	t.Run("configured endpoint serves refunds too", func(t *testing.T) {
		p, err := NewPay(app(config.Pay{MchID: testMchID, APIKey: testAPIKey}),
			adapters.Options{Endpoints: config.Endpoints{QPayAPI: "http://127.0.0.1:8080/sandbox/qpay/"}})
		if err != nil {
			t.Fatal(err)
		}
		if p.base != "http://127.0.0.1:8080/sandbox/qpay" || p.refundBase != p.base {
			t.Fatalf("base %s, refund base %s", p.base, p.refundBase)
		}
	})
	t.Run("operator password is sent as its MD5", func(t *testing.T) {
		p, err := NewPay(app(config.Pay{MchID: testMchID, APIKey: testAPIKey, OpUserPasswd: "111111"}), adapters.Options{})
		if err != nil {
			t.Fatal(err)
		}
		sum := md5.Sum([]byte("111111"))
		if p.opUserID != testMchID || p.opUserPasswd != hex.EncodeToString(sum[:]) {
			t.Fatalf("operator %s / %s", p.opUserID, p.opUserPasswd)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		if _, err := NewPay(app(config.Pay{MchID: testMchID}), adapters.Options{}); err == nil {
			t.Fatal("accepted a merchant without api_key")
		}
	})
	t.Run("unreadable certificate", func(t *testing.T) {
		_, err := NewPay(app(config.Pay{MchID: testMchID, APIKey: testAPIKey,
			CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}), adapters.Options{})
		if err == nil || !strings.Contains(err.Error(), "cert_file") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestRefundPresentsClientCertificate runs a refund against a TLS server
// that requires a client certificate, as api.qpay.qq.com does.
func TestRefundPresentsClientCertificate(t *testing.T) {
	t.Parallel()
	certFile, keyFile := writeClientCert(t, "minigate-test-merchant")
	var seen string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			seen = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		req := readForm(t, r)
		if r.URL.Path != pathRefund || !signValid(req, testAPIKey) || req["op_user_passwd"] == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		resp := map[string]string{"return_code": "SUCCESS", "result_code": "SUCCESS", "appid": testAppID,
			"mch_id": testMchID, "nonce_str": "n", "out_trade_no": req["out_trade_no"],
			"out_refund_no": req["out_refund_no"], "refund_id": "RID", "refund_fee": req["refund_fee"], "total_fee": "10"}
		resp["sign"] = sign(resp, testAPIKey)
		_, _ = w.Write(encodeXML(resp))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	p, err := NewPay(&config.App{ID: "shop-qq", Platform: config.QQ, AppID: testAppID, AppSecret: "s",
		Pay: &config.Pay{MchID: testMchID, APIKey: testAPIKey, CertFile: certFile, KeyFile: keyFile, OpUserPasswd: "pw"}},
		adapters.Options{Endpoints: config.Endpoints{QPayAPI: srv.URL}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	p.refundHTTP.Transport.(*http.Transport).TLSClientConfig.RootCAs = roots

	r, err := p.Refund(context.Background(), orders.RefundRequest{OutTradeNo: "O1", OutRefundNo: "R1", Amount: 5, Total: 10})
	if err != nil {
		t.Fatal(err)
	}
	if seen != "minigate-test-merchant" || r.RefundID != "RID" || r.Amount != 5 || r.Total != 10 {
		t.Fatalf("client certificate %q, refund %+v", seen, r)
	}
}

func readForm(t *testing.T, r *http.Request) map[string]string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("request body: %v", err)
	}
	f, err := decodeXML(b)
	if err != nil {
		t.Errorf("request body: %v", err)
	}
	return f
}

func writeClientCert(t *testing.T, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "apiclient_cert.pem"), filepath.Join(dir, "apiclient_key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	kb := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func BenchmarkParseNotification(b *testing.B) {
	p := testPay(b)
	body := signedBody(paidFields(), testAPIKey)
	req := webhooks.Request{Method: http.MethodPost, Body: body}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.ParseNotification(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
