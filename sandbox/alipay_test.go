package sandbox

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smartwalle/alipay/v3"
	"github.com/smartwalle/ncrypto"
	"github.com/smartwalle/nsign"

	"github.com/minigate/minigate/internal/config"
)

// alipayTestNote is a callback the simulator delivered.
type alipayTestNote struct {
	Path  string
	CType string
	Raw   []byte
	Form  url.Values
}

type alipayTestEnv struct {
	sb      *Sandbox
	app     *App
	cfg     *config.App
	gateway string
	sdk     *alipay.Client // minigate's side, as the SDK signs and verifies
	notes   chan alipayTestNote
}

// alipayTestSetup runs a simulator with one Alipay app whose callbacks go
// to a capturing receiver; aesKey adds a content encryption key.
func alipayTestSetup(t *testing.T, aesKey bool) *alipayTestEnv {
	t.Helper()
	e := &alipayTestEnv{notes: make(chan alipayTestNote, 64)}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(raw))
		e.notes <- alipayTestNote{Path: r.URL.Path, CType: r.Header.Get("Content-Type"), Raw: raw, Form: form}
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(rcv.Close)

	e.sb = New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	e.gateway = serveTest(t, e.sb) + "/alipay/gateway.do"

	var err error
	e.app, e.cfg, err = NewAppPair(AppSpec{ID: "ali-" + randomHex(3), Platform: Alipay, PublicURL: rcv.URL, Pay: true, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if aesKey {
		k := make([]byte, 16)
		_, _ = rand.Read(k)
		e.app.Messages.AESKey = base64.StdEncoding.EncodeToString(k)
		e.cfg.Messages.AESKey = e.app.Messages.AESKey
	}
	e.sb.AddApp(e.app)
	e.sdk = alipayTestSDK(t, e.cfg, e.gateway, e.cfg.AlipayPublicKey)
	return e
}

// alipayTestSDK is a smartwalle client for cfg trusting alipayPub.
func alipayTestSDK(t *testing.T, cfg *config.App, gateway string, alipayPub *rsa.PublicKey) *alipay.Client {
	t.Helper()
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(cfg.PrivateKey)})
	c, err := alipay.New(cfg.AppID, string(priv), true, alipay.WithProductionGateway(gateway),
		alipay.WithTimeLocation(alipayZone), alipay.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(alipayPub)
	if err := c.LoadAliPayPublicKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))); err != nil {
		t.Fatal(err)
	}
	if cfg.Messages.AESKey != "" {
		if err := c.SetEncryptKey(cfg.Messages.AESKey); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// note waits for the next delivered callback.
func (e *alipayTestEnv) note(t *testing.T) alipayTestNote {
	t.Helper()
	select {
	case n := <-e.notes:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no callback delivered")
		return alipayTestNote{}
	}
}

// noNote checks that no callback arrives for a short while.
func (e *alipayTestEnv) noNote(t *testing.T) {
	t.Helper()
	select {
	case n := <-e.notes:
		t.Fatalf("unexpected callback to %s: %s", n.Path, n.Raw)
	case <-time.After(200 * time.Millisecond):
	}
}

// subCode returns the sub_code of an SDK error (an *alipay.Error).
func subCode(t *testing.T, err error) string {
	t.Helper()
	var ae *alipay.Error
	if !errors.As(err, &ae) || ae == nil {
		t.Fatalf("want an Alipay error, got %v", err)
	}
	return ae.SubCode
}

func (e *alipayTestEnv) create(t *testing.T, outTradeNo, amount string) *alipay.TradeCreateRsp {
	t.Helper()
	p := alipay.TradeCreate{BuyerId: "2088000000000042"}
	p.OutTradeNo, p.TotalAmount, p.Subject, p.ProductCode = outTradeNo, amount, "sandbox order", "JSAPI_PAY"
	p.NotifyURL = e.app.CallbackURL + "/payments"
	rsp, err := e.sdk.TradeCreate(context.Background(), p)
	if err != nil {
		t.Fatalf("trade.create: %v", err)
	}
	return rsp
}

func TestAlipayOAuthToken(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, false)
	ctx := context.Background()
	code, err := e.sb.MintCode(e.app.ID, "alice", "login")
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := e.sdk.SystemOauthToken(ctx, alipay.SystemOauthToken{GrantType: "authorization_code", Code: code})
	if err != nil {
		t.Fatalf("oauth.token: %v", err)
	}
	u := e.sb.User(e.app, "alice")
	if rsp.UserId != u.AlipayUserID || rsp.OpenId != u.AlipayOpenID || rsp.AccessToken == "" {
		t.Fatalf("oauth.token = %+v, want user %s / %s", rsp, u.AlipayUserID, u.AlipayOpenID)
	}
	if !regexp.MustCompile(`^2088\d{12}$`).MatchString(rsp.UserId) {
		t.Fatalf("user_id %q is not 2088 + 12 digits", rsp.UserId)
	}

	_, err = e.sdk.SystemOauthToken(ctx, alipay.SystemOauthToken{GrantType: "authorization_code", Code: code})
	if got := subCode(t, err); got != "isv.code-invalid" {
		t.Fatalf("reused code: sub_code %q", got)
	}
	_, err = e.sdk.SystemOauthToken(ctx, alipay.SystemOauthToken{GrantType: "authorization_code", Code: "nope"})
	if got := subCode(t, err); got != "isv.code-invalid" {
		t.Fatalf("unknown code: sub_code %q", got)
	}

	// The SDK verifies response signatures: trusting another key fails.
	other, _ := testKey()
	for other.Equal(e.app.Alipay.AlipayKey) {
		other, _ = testKey()
	}
	wrong := alipayTestSDK(t, e.cfg, e.gateway, &other.PublicKey)
	code, _ = e.sb.MintCode(e.app.ID, "alice", "login")
	if _, err := wrong.SystemOauthToken(ctx, alipay.SystemOauthToken{GrantType: "authorization_code", Code: code}); !errors.Is(err, rsa.ErrVerification) {
		t.Fatalf("response under a wrong Alipay key: err %v, want a verification error", err)
	}
}

// alipayTestPost sends params (split between query and form body) to the
// gateway and returns the decoded response.
func alipayTestPost(t *testing.T, method, gateway string, query, form url.Values) map[string]json.RawMessage {
	t.Helper()
	u := gateway
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response %q: %v", raw, err)
	}
	return out
}

// alipayTestSign (re)signs v with key the way Alipay requests are signed.
func alipayTestSign(t *testing.T, v url.Values, key *rsa.PrivateKey) {
	t.Helper()
	v.Del("sign")
	sig, err := alipayRSASign(key, []byte(alipaySignContent(v, "sign")))
	if err != nil {
		t.Fatal(err)
	}
	v.Set("sign", sig)
}

func TestAlipayGatewayChecksRequests(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, false)
	other, _ := testKey()
	for other.Equal(e.cfg.PrivateKey) {
		other, _ = testKey()
	}
	// base is a request the SDK signed: a trade query for an unknown trade,
	// which passes every gateway check and fails only in business.
	base := func(t *testing.T) url.Values {
		v, err := e.sdk.URLValues(alipay.TradeQuery{OutTradeNo: "missing"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name    string
		mutate  func(url.Values)
		split   bool   // common params in the query, the rest in the body
		get     bool   // everything in the query of a GET
		key     string // response key expected
		sub     string
		signed  bool
		resign  bool // re-sign after mutate with the app key
		signKey *rsa.PrivateKey
	}{
		{name: "sdk request", key: "alipay_trade_query_response", sub: "ACQ.TRADE_NOT_EXIST", signed: true},
		{name: "params split like other SDKs", split: true, key: "alipay_trade_query_response", sub: "ACQ.TRADE_NOT_EXIST", signed: true},
		{name: "GET", get: true, key: "alipay_trade_query_response", sub: "ACQ.TRADE_NOT_EXIST", signed: true},
		{name: "tampered biz_content", mutate: func(v url.Values) { v.Set("biz_content", `{"out_trade_no":"other"}`) },
			key: "alipay_trade_query_response", sub: "isv.invalid-signature", signed: true},
		{name: "signed by another key", resign: true, signKey: other, key: "alipay_trade_query_response", sub: "isv.invalid-signature", signed: true},
		{name: "missing sign", mutate: func(v url.Values) { v.Del("sign") }, key: "alipay_trade_query_response", sub: "isv.missing-signature", signed: true},
		{name: "sign_type RSA", mutate: func(v url.Values) { v.Set("sign_type", "RSA") }, resign: true,
			key: "alipay_trade_query_response", sub: "isv.invalid-signature-type", signed: true},
		{name: "stale timestamp", mutate: func(v url.Values) {
			v.Set("timestamp", time.Now().Add(-time.Hour).In(alipayZone).Format(alipayTimeLayout))
		}, resign: true, key: "alipay_trade_query_response", sub: "isv.invalid-timestamp", signed: true},
		{name: "timestamp in UTC format", mutate: func(v url.Values) { v.Set("timestamp", time.Now().UTC().Format(time.RFC3339)) },
			resign: true, key: "alipay_trade_query_response", sub: "isv.invalid-timestamp", signed: true},
		{name: "charset gbk", mutate: func(v url.Values) { v.Set("charset", "gbk") }, resign: true,
			key: "alipay_trade_query_response", sub: "isv.invalid-charset", signed: true},
		{name: "unknown app", mutate: func(v url.Values) { v.Set("app_id", "2021999999999999") }, resign: true,
			key: "error_response", sub: "isv.invalid-app-id"},
		{name: "unknown method", mutate: func(v url.Values) { v.Set("method", "alipay.trade.nope") }, resign: true,
			key: "error_response", sub: "isv.invalid-method", signed: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v := base(t)
			if c.mutate != nil {
				c.mutate(v)
			}
			if c.resign {
				k := c.signKey
				if k == nil {
					k = e.cfg.PrivateKey
				}
				alipayTestSign(t, v, k)
			}
			var out map[string]json.RawMessage
			switch {
			case c.get:
				out = alipayTestPost(t, http.MethodGet, e.gateway, v, nil)
			case c.split:
				q, f := url.Values{}, url.Values{}
				for k := range v {
					if k == "biz_content" {
						f.Set(k, v.Get(k))
					} else {
						q.Set(k, v.Get(k))
					}
				}
				out = alipayTestPost(t, http.MethodPost, e.gateway, q, f)
			default:
				out = alipayTestPost(t, http.MethodPost, e.gateway, nil, v)
			}
			raw, ok := out[c.key]
			if !ok {
				t.Fatalf("no %s in %v", c.key, out)
			}
			var fields map[string]string
			_ = json.Unmarshal(raw, &fields)
			if fields["sub_code"] != c.sub {
				t.Fatalf("sub_code %q (%s), want %q", fields["sub_code"], raw, c.sub)
			}
			var sign string
			_ = json.Unmarshal(out["sign"], &sign)
			if !c.signed {
				if sign != "" {
					t.Fatalf("answer for an unknown app is signed")
				}
				return
			}
			sig, _ := base64.StdEncoding.DecodeString(sign)
			if err := alipayRSAVerify(&e.app.Alipay.AlipayKey.PublicKey, raw, sig); err != nil {
				t.Fatalf("response signature over the raw value: %v", err)
			}
		})
	}

	t.Run("duplicate parameter", func(t *testing.T) {
		t.Parallel()
		v := base(t)
		q := url.Values{"app_id": {v.Get("app_id")}}
		out := alipayTestPost(t, http.MethodPost, e.gateway, q, v)
		if !strings.Contains(string(out["error_response"]), "isv.invalid-parameter") {
			t.Fatalf("duplicate app_id: %v", out)
		}
	})
}

func TestAlipayTradeLifecycle(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, false)
	ctx := context.Background()
	const no = "order_life_1"

	rsp := e.create(t, no, "1.00")
	if !regexp.MustCompile(`^\d{28}$`).MatchString(rsp.TradeNo) || rsp.OutTradeNo != no || rsp.Code != alipay.CodeSuccess {
		t.Fatalf("trade.create = %+v", rsp)
	}
	if again := e.create(t, no, "1.00"); again.TradeNo != rsp.TradeNo {
		t.Fatalf("same request gave trade_no %s, then %s", rsp.TradeNo, again.TradeNo)
	}
	if other := e.create(t, no, "2.00"); other.SubCode != "ACQ.CONTEXT_INCONSISTENT" {
		t.Fatalf("same out_trade_no, other amount: %+v", other)
	}
	q, err := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: no})
	if err != nil || q.TradeStatus != alipay.TradeStatusWaitBuyerPay || q.TotalAmount != "1.00" || q.SendPayDate != "" {
		t.Fatalf("query before paying: %+v, %v", q, err)
	}

	// Pay: the notification verifies with the SDK's own decoder.
	rep, err := e.sb.Pay(ctx, e.app, no, Faults{})
	if err != nil || len(rep.Deliveries) != 1 || rep.Deliveries[0].Body != "success" {
		t.Fatalf("pay: %+v, %v", rep, err)
	}
	n := e.note(t)
	if n.Path != "/callbacks/"+e.app.ID+"/payments" || !strings.HasPrefix(n.CType, "application/x-www-form-urlencoded") {
		t.Fatalf("notification to %s as %s", n.Path, n.CType)
	}
	dec, err := e.sdk.DecodeNotification(ctx, n.Form)
	if err != nil {
		t.Fatalf("the SDK rejects the payment notification: %v", err)
	}
	if dec.TradeStatus != alipay.TradeStatusSuccess || dec.TotalAmount != "1.00" || dec.ReceiptAmount != "1.00" ||
		dec.SellerId != e.app.Alipay.SellerID || dec.AppId != e.app.AppID || dec.TradeNo != rsp.TradeNo ||
		dec.BuyerId != "2088000000000042" || dec.NotifyType != "trade_status_sync" || dec.NotifyId == "" || dec.GmtPayment == "" {
		t.Fatalf("payment notification: %+v", dec)
	}
	q, err = e.sdk.TradeQuery(ctx, alipay.TradeQuery{TradeNo: rsp.TradeNo})
	if err != nil || q.TradeStatus != alipay.TradeStatusSuccess || q.SendPayDate == "" || q.ReceiptAmount != "1.00" {
		t.Fatalf("query after paying: %+v, %v", q, err)
	}
	if again := e.create(t, no, "1.00"); again.SubCode != "ACQ.TRADE_HAS_SUCCESS" {
		t.Fatalf("create a paid trade: %+v", again)
	}
	if c, err := e.sdk.TradeClose(ctx, alipay.TradeClose{OutTradeNo: no}); err != nil || c.SubCode != "ACQ.TRADE_STATUS_ERROR" {
		t.Fatalf("close a paid trade: %+v, %v", c, err)
	}

	refund := func(reqNo, amount string) *alipay.TradeRefundRsp {
		t.Helper()
		r, err := e.sdk.TradeRefund(ctx, alipay.TradeRefund{OutTradeNo: no, RefundAmount: amount, OutRequestNo: reqNo, RefundReason: "test"})
		if err != nil {
			t.Fatalf("refund: %v", err)
		}
		return r
	}
	if r := refund("rf1", "0.30"); r.Code != alipay.CodeSuccess || r.FundChange != "Y" || r.RefundFee != "0.30" {
		t.Fatalf("first refund: %+v", r)
	}
	rn := e.note(t)
	rdec, err := e.sdk.DecodeNotification(ctx, rn.Form)
	if err != nil {
		t.Fatalf("the SDK rejects the refund notification: %v", err)
	}
	if rdec.OutBizNo != "rf1" || rdec.RefundFee != "0.30" || rdec.GmtRefund == "" || rdec.TradeStatus != alipay.TradeStatusSuccess || rdec.NotifyId == dec.NotifyId {
		t.Fatalf("refund notification: %+v", rdec)
	}
	if r := refund("rf1", "0.30"); r.FundChange != "N" || r.RefundFee != "0.30" {
		t.Fatalf("repeated refund: %+v", r)
	}
	e.noNote(t)
	if r := refund("rf1", "0.20"); r.SubCode != "ACQ.DISCORDANT_REPEAT_REQUEST" {
		t.Fatalf("same out_request_no, other amount: %+v", r)
	}
	if r := refund("rf2", "0.71"); r.SubCode != "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL" {
		t.Fatalf("over-refund: %+v", r)
	}
	rq, err := e.sdk.TradeFastPayRefundQuery(ctx, alipay.TradeFastPayRefundQuery{OutTradeNo: no, OutRequestNo: "rf1"})
	if err != nil || rq.RefundStatus != "REFUND_SUCCESS" || rq.RefundAmount != "0.30" || rq.TotalAmount != "1.00" {
		t.Fatalf("refund query: %+v, %v", rq, err)
	}
	rq, err = e.sdk.TradeFastPayRefundQuery(ctx, alipay.TradeFastPayRefundQuery{OutTradeNo: no, OutRequestNo: "rf2"})
	if err != nil || rq.Code != alipay.CodeSuccess || rq.RefundStatus != "" {
		t.Fatalf("query of a refund that never happened: %+v, %v", rq, err)
	}
	if r := refund("rf2", "0.70"); r.FundChange != "Y" || r.RefundFee != "1.00" {
		t.Fatalf("refund of the rest: %+v", r)
	}
	full, err := e.sdk.DecodeNotification(ctx, e.note(t).Form)
	if err != nil || full.TradeStatus != alipay.TradeStatusClosed || full.RefundFee != "1.00" || full.OutBizNo != "rf2" || full.GmtClose == "" {
		t.Fatalf("full refund notification: %+v, %v", full, err)
	}
	q, err = e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: no})
	if err != nil || q.TradeStatus != alipay.TradeStatusClosed || q.SendPayDate == "" {
		t.Fatalf("query after a full refund: %+v, %v", q, err)
	}

	// Re-paying a paid trade re-sends the same notification.
	if _, err := e.sb.Pay(ctx, e.app, no, Faults{}); err != nil {
		t.Fatal(err)
	}
	if again := e.note(t); again.Form.Get("notify_id") != dec.NotifyId {
		t.Fatalf("re-sent payment notification has notify_id %s, first %s", again.Form.Get("notify_id"), dec.NotifyId)
	}
}

func TestAlipayTradeCreateValidation(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, false)
	cases := []struct {
		name   string
		mutate func(p *alipay.TradeCreate)
		sub    string
	}{
		{"minimum amount", func(p *alipay.TradeCreate) { p.TotalAmount = "0.01" }, ""},
		{"maximum amount", func(p *alipay.TradeCreate) { p.TotalAmount = "100000000.00" }, ""},
		{"one decimal", func(p *alipay.TradeCreate) { p.TotalAmount = "1.5" }, ""},
		{"open id buyer", func(p *alipay.TradeCreate) {
			p.BuyerId, p.BuyerOpenId = "", "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"
		}, ""},
		{"time_expire", func(p *alipay.TradeCreate) {
			p.TimeExpire = time.Now().Add(time.Hour).In(alipayZone).Format(alipayTimeLayout)
		}, ""},
		{"no product code", func(p *alipay.TradeCreate) { p.ProductCode = "" }, ""},
		{"zero amount", func(p *alipay.TradeCreate) { p.TotalAmount = "0.00" }, "ACQ.INVALID_PARAMETER"},
		{"three decimals", func(p *alipay.TradeCreate) { p.TotalAmount = "1.001" }, "ACQ.INVALID_PARAMETER"},
		{"over the maximum", func(p *alipay.TradeCreate) { p.TotalAmount = "100000000.01" }, "ACQ.INVALID_PARAMETER"},
		{"exponent", func(p *alipay.TradeCreate) { p.TotalAmount = "1e2" }, "ACQ.INVALID_PARAMETER"},
		{"negative", func(p *alipay.TradeCreate) { p.TotalAmount = "-1.00" }, "ACQ.INVALID_PARAMETER"},
		{"hyphen in out_trade_no", func(p *alipay.TradeCreate) { p.OutTradeNo = "a-b" }, "ACQ.INVALID_PARAMETER"},
		{"65-char out_trade_no", func(p *alipay.TradeCreate) { p.OutTradeNo = strings.Repeat("a", 65) }, "ACQ.INVALID_PARAMETER"},
		{"no subject", func(p *alipay.TradeCreate) { p.Subject = "" }, "ACQ.INVALID_PARAMETER"},
		{"257-char subject", func(p *alipay.TradeCreate) { p.Subject = strings.Repeat("单", 257) }, "ACQ.INVALID_PARAMETER"},
		{"no buyer", func(p *alipay.TradeCreate) { p.BuyerId = "" }, "ACQ.INVALID_PARAMETER"},
		{"bad buyer_id", func(p *alipay.TradeCreate) { p.BuyerId = "1234" }, "ACQ.BUYER_NOT_EXIST"},
		{"other product", func(p *alipay.TradeCreate) { p.ProductCode = "FAST_INSTANT_TRADE_PAY" }, "ACQ.INVALID_PARAMETER"},
		{"bad time_expire", func(p *alipay.TradeCreate) { p.TimeExpire = "2030-01-01T00:00:00Z" }, "ACQ.INVALID_PARAMETER"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := alipay.TradeCreate{BuyerId: "2088000000000042"}
			p.OutTradeNo, p.TotalAmount, p.Subject, p.ProductCode = "v_"+randomHex(4)+string(rune('a'+i%26)), "1.00", "s", "JSAPI_PAY"
			c.mutate(&p)
			rsp, err := e.sdk.TradeCreate(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if rsp.SubCode != c.sub || (c.sub == "" && rsp.TradeNo == "") {
				t.Fatalf("trade.create: %+v, want sub_code %q", rsp, c.sub)
			}
		})
	}
}

func TestAlipayCloseAndExpiry(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, false)
	ctx := context.Background()
	e.create(t, "to_close", "0.50")
	if c, err := e.sdk.TradeClose(ctx, alipay.TradeClose{OutTradeNo: "to_close"}); err != nil || c.Code != alipay.CodeSuccess {
		t.Fatalf("close: %+v, %v", c, err)
	}
	if c, _ := e.sdk.TradeClose(ctx, alipay.TradeClose{OutTradeNo: "to_close"}); c.SubCode != "ACQ.TRADE_HAS_CLOSE" {
		t.Fatalf("close twice: %+v", c)
	}
	if _, err := e.sb.Pay(ctx, e.app, "to_close", Faults{}); err == nil {
		t.Fatal("paying a closed trade succeeded")
	}
	e.noNote(t)
	if r, _ := e.sdk.TradeRefund(ctx, alipay.TradeRefund{OutTradeNo: "to_close", RefundAmount: "0.10", OutRequestNo: "x"}); r.SubCode != "ACQ.TRADE_HAS_CLOSE" {
		t.Fatalf("refund a closed trade: %+v", r)
	}
	if q, _ := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: "nope"}); q.SubCode != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("query unknown: %+v", q)
	}
	if c, _ := e.sdk.TradeClose(ctx, alipay.TradeClose{OutTradeNo: "nope"}); c.SubCode != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("close unknown: %+v", c)
	}

	e.create(t, "unpaid", "0.50")
	if r, _ := e.sdk.TradeRefund(ctx, alipay.TradeRefund{OutTradeNo: "unpaid", RefundAmount: "0.10", OutRequestNo: "x"}); r.SubCode != "ACQ.TRADE_STATUS_ERROR" {
		t.Fatalf("refund an unpaid trade: %+v", r)
	}

	p := alipay.TradeCreate{BuyerId: "2088000000000042"}
	p.OutTradeNo, p.TotalAmount, p.Subject = "expiring", "0.50", "s"
	p.TimeExpire = time.Now().Add(time.Second).In(alipayZone).Format(alipayTimeLayout)
	if _, err := e.sdk.TradeCreate(ctx, p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond) // time_expire has a one-second resolution
	if q, _ := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: "expiring"}); q.TradeStatus != alipay.TradeStatusClosed {
		t.Fatalf("expired trade: %+v", q)
	}
}

func TestAlipayPayFaults(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, false)
	ctx := context.Background()
	amount := int64(123)
	cases := []struct {
		name   string
		faults Faults
		check  func(t *testing.T, notes []alipayTestNote)
		count  int
	}{
		{"duplicates", Faults{Duplicates: 2}, func(t *testing.T, notes []alipayTestNote) {
			for _, n := range notes[1:] {
				if n.Form.Get("notify_id") != notes[0].Form.Get("notify_id") || string(n.Raw) != string(notes[0].Raw) {
					t.Fatal("duplicates differ")
				}
			}
		}, 3},
		{"drop", Faults{Drop: true}, nil, 0},
		{"amount", Faults{Amount: &amount}, func(t *testing.T, notes []alipayTestNote) {
			if _, err := e.sdk.DecodeNotification(ctx, notes[0].Form); err != nil || notes[0].Form.Get("total_amount") != "1.23" {
				t.Fatalf("amount fault: total %s, verify %v", notes[0].Form.Get("total_amount"), err)
			}
		}, 1},
		{"bad signature", Faults{BadSignature: true}, func(t *testing.T, notes []alipayTestNote) {
			if _, err := e.sdk.DecodeNotification(ctx, notes[0].Form); err == nil {
				t.Fatal("the SDK accepts a corrupted signature")
			}
		}, 1},
		{"foreign app and merchant", Faults{ForeignAppID: true, ForeignMerchant: true}, func(t *testing.T, notes []alipayTestNote) {
			f := notes[0].Form
			if _, err := e.sdk.DecodeNotification(ctx, f); err != nil || f.Get("app_id") == e.app.AppID || f.Get("seller_id") == e.app.Alipay.SellerID {
				t.Fatalf("foreign fault: app %s seller %s verify %v", f.Get("app_id"), f.Get("seller_id"), err)
			}
		}, 1},
		{"stale", Faults{StaleTimestamp: true}, func(t *testing.T, notes []alipayTestNote) {
			nt, err := time.ParseInLocation(alipayTimeLayout, notes[0].Form.Get("notify_time"), alipayZone)
			if err != nil || time.Since(nt) < 9*time.Minute {
				t.Fatalf("stale notify_time %s", notes[0].Form.Get("notify_time"))
			}
		}, 1},
		{"truncate", Faults{Truncate: true}, func(t *testing.T, notes []alipayTestNote) {
			if _, err := e.sdk.DecodeNotification(ctx, notes[0].Form); err == nil {
				t.Fatal("a truncated notification verifies")
			}
		}, 1},
	}
	for i, c := range cases {
		// Sequential: the cases share the receiver.
		no := "fault_" + string(rune('a'+i))
		e.create(t, no, "1.00")
		rep, err := e.sb.Pay(ctx, e.app, no, c.faults)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(rep.Deliveries) != c.count || rep.Dropped != c.faults.Drop {
			t.Fatalf("%s: %d deliveries (dropped %t)", c.name, len(rep.Deliveries), rep.Dropped)
		}
		var notes []alipayTestNote
		for range c.count {
			notes = append(notes, e.note(t))
		}
		e.noNote(t)
		if c.check != nil {
			c.check(t, notes)
		}
		if q, _ := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: no}); q.TradeStatus != alipay.TradeStatusSuccess {
			t.Fatalf("%s: the trade is %s after paying", c.name, q.TradeStatus)
		}
	}
	if _, err := e.sb.Pay(ctx, e.app, "unknown", Faults{}); err == nil {
		t.Fatal("paying an unknown trade succeeded")
	}
	if _, err := e.sb.Pay(ctx, e.app, "fault_a", Faults{TamperCiphertext: true}); err == nil {
		t.Fatal("tamper_ciphertext on a payment notification was accepted")
	}
}

// alipayTestMessageVerifies checks a message notification's signature the
// way it is signed (sign_type included) with the SDK's own encoder.
func alipayTestMessageVerifies(f url.Values, pub *rsa.PublicKey) error {
	v := nsign.New(nsign.WithMethod(nsign.NewRSAMethod(crypto.SHA256, nil, pub)), nsign.WithEncoder(alipay.Encoder{}))
	sig, err := base64.StdEncoding.DecodeString(f.Get("sign"))
	if err != nil {
		return err
	}
	return v.VerifyValues(f, sig, nsign.WithIgnore("sign"))
}

func TestAlipayPushMessage(t *testing.T) {
	t.Parallel()
	for _, encrypted := range []bool{false, true} {
		name := "plaintext"
		if encrypted {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := alipayTestSetup(t, encrypted)
			ctx := context.Background()
			pub := &e.app.Alipay.AlipayKey.PublicKey
			open := func(t *testing.T, n alipayTestNote) map[string]any {
				t.Helper()
				biz := []byte(n.Form.Get("biz_content"))
				if encrypted {
					if n.Form.Get("encrypt_type") != "AES" {
						t.Fatalf("encrypted push without encrypt_type: %v", n.Form)
					}
					key, _ := base64.StdEncoding.DecodeString(e.app.Messages.AESKey)
					ct, _ := base64.StdEncoding.DecodeString(string(biz))
					plain, err := ncrypto.AESCBCDecrypt(ct, key, make([]byte, 16), ncrypto.PKCS7Padding{})
					if err != nil {
						t.Fatalf("the SDK's AES cannot decrypt the push: %v", err)
					}
					biz = plain
				}
				m := map[string]any{}
				if err := json.Unmarshal(biz, &m); err != nil {
					t.Fatalf("biz_content %q: %v", biz, err)
				}
				return m
			}
			u := e.sb.User(e.app, "bob")
			rep, err := e.sb.Push(ctx, e.app, "bob", PushRequest{Type: "text", Content: "你好 & hello=1"})
			if err != nil || len(rep.Deliveries) != 1 || rep.Deliveries[0].Body != "success" {
				t.Fatalf("push: %+v, %v", rep, err)
			}
			n := e.note(t)
			if n.Path != "/callbacks/"+e.app.ID+"/messages" {
				t.Fatalf("pushed to %s", n.Path)
			}
			if err := alipayTestMessageVerifies(n.Form, pub); err != nil {
				t.Fatalf("push signature: %v", err)
			}
			if n.Form.Get("msg_method") != AlipayMessageMethod || n.Form.Get("app_id") != e.app.AppID || n.Form.Get("notify_id") == "" {
				t.Fatalf("envelope: %v", n.Form)
			}
			m := open(t, n)
			if m["content"] != "你好 & hello=1" || m["from_user_id"] != u.AlipayUserID || m["from_open_id"] != u.AlipayOpenID ||
				m["msg_type"] != "text" || m["to_app_id"] != e.app.AppID || m["msg_id"] != rep.Details["msg_id"] {
				t.Fatalf("message: %v", m)
			}

			// The same MsgID and CreateTime re-send the same notification.
			var id int64 = 77
			for range 2 {
				if _, err := e.sb.Push(ctx, e.app, "bob", PushRequest{Type: "event", MsgID: id, CreateTime: 1714036504}); err != nil {
					t.Fatal(err)
				}
			}
			a, b := e.note(t), e.note(t)
			if a.Form.Get("notify_id") != b.Form.Get("notify_id") {
				t.Fatal("re-sent message has another notify_id")
			}
			if m := open(t, a); m["event"] != "user_enter_tempsession" || m["msg_id"] != "77" || m["create_time"] != float64(1714036504) {
				t.Fatalf("event: %v", m)
			}

			// Faults.
			if _, err := e.sb.Push(ctx, e.app, "bob", PushRequest{Type: "text", Content: "x", Faults: Faults{BadSignature: true}}); err != nil {
				t.Fatal(err)
			}
			if err := alipayTestMessageVerifies(e.note(t).Form, pub); err == nil {
				t.Fatal("bad_signature push verifies")
			}
			if _, err := e.sb.Push(ctx, e.app, "bob", PushRequest{Type: "text", Content: "x", Faults: Faults{ForeignAppID: true, StaleTimestamp: true}}); err != nil {
				t.Fatal(err)
			}
			fn := e.note(t)
			if err := alipayTestMessageVerifies(fn.Form, pub); err != nil {
				t.Fatalf("foreign-app push must be validly signed: %v", err)
			}
			if m := open(t, fn); m["to_app_id"] == e.app.AppID {
				t.Fatal("foreign_appid push names our app")
			}
			ms, err := strconv.ParseInt(fn.Form.Get("utc_timestamp"), 10, 64)
			if age := time.Since(time.UnixMilli(ms)); err != nil || age < 9*time.Minute || age > 11*time.Minute {
				t.Fatalf("stale push: utc_timestamp %q", fn.Form.Get("utc_timestamp"))
			}
			_, err = e.sb.Push(ctx, e.app, "bob", PushRequest{Type: "text", Content: "x", Faults: Faults{TamperCiphertext: true}})
			if !encrypted {
				if err == nil {
					t.Fatal("tamper_ciphertext accepted without an AES key")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				tn := e.note(t)
				if err := alipayTestMessageVerifies(tn.Form, pub); err != nil {
					t.Fatalf("tampered push must be validly signed: %v", err)
				}
				key, _ := base64.StdEncoding.DecodeString(e.app.Messages.AESKey)
				ct, _ := base64.StdEncoding.DecodeString(tn.Form.Get("biz_content"))
				if plain, err := ncrypto.AESCBCDecrypt(ct, key, make([]byte, 16), ncrypto.PKCS7Padding{}); err == nil && json.Valid(plain) {
					t.Fatal("tampered ciphertext still decrypts to JSON")
				}
			}
			for _, bad := range []PushRequest{
				{Type: "text", Content: "x", Faults: Faults{BadMsgSignature: true}},
				{Type: "text", Content: "x", Faults: Faults{Amount: &id}},
				{Type: "Text!", Content: "x"},
				{Type: "text"},
			} {
				if _, err := e.sb.Push(ctx, e.app, "bob", bad); err == nil {
					t.Fatalf("push %+v accepted", bad)
				}
			}
			e.noNote(t)
		})
	}
}

func TestAlipayEncryptedAPI(t *testing.T) {
	t.Parallel()
	e := alipayTestSetup(t, true)
	ctx := context.Background()
	// The SDK encrypts biz_content and decrypts the (signed, encrypted) answer.
	rsp := e.create(t, "enc_1", "9.99")
	if rsp.Code != alipay.CodeSuccess || rsp.TradeNo == "" {
		t.Fatalf("encrypted trade.create: %+v", rsp)
	}
	q, err := e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: "enc_1"})
	if err != nil || q.TotalAmount != "9.99" {
		t.Fatalf("encrypted query: %+v, %v", q, err)
	}
	v, err := e.sdk.URLValues(alipay.TradeQuery{OutTradeNo: "enc_1"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Get("encrypt_type") != "AES" || strings.HasPrefix(v.Get("biz_content"), "{") {
		t.Fatalf("the SDK did not encrypt: %v", v)
	}
	out := alipayTestPost(t, http.MethodPost, e.gateway, nil, v)
	var ct string
	if err := json.Unmarshal(out["alipay_trade_query_response"], &ct); err != nil {
		t.Fatalf("the answer is not an encrypted string: %s", out["alipay_trade_query_response"])
	}
	// A query of an unknown trade answers in plaintext (failures are not encrypted).
	q, err = e.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: "nope"})
	if err != nil || q.SubCode != "ACQ.TRADE_NOT_EXIST" {
		t.Fatalf("encrypted query of an unknown trade: %+v, %v", q, err)
	}
}

// Published RSA2 examples: two real Alipay notifications with their
// signatures and the public keys that verify them, from the test suite of
// Alipay's Node.js SDK. The trade notification signs everything but sign
// and sign_type; the service-market notification also signs sign_type.
var (
	alipayVectorTradeKey = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB"
	alipayVectorTrade    = map[string]string{
		"gmt_create": "2019-08-15 15:56:22", "charset": "utf-8", "seller_email": "z97-yuquerevenue@service.aliyun.com",
		"subject":  "语雀空间 500人规模",
		"sign":     "QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwrVgOs08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyHPX5Gm4ELNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P0y095uQcDdK0YjCh4x7wVSov+lrmOQ==",
		"buyer_id": "2088102534368455", "invoice_amount": "0.10", "notify_id": "2019081500222155624068450559358070",
		"fund_bill_list": `[{"amount":"0.10","fundChannel":"ALIPAYACCOUNT"}]`,
		"notify_type":    "trade_status_sync", "trade_status": "TRADE_SUCCESS", "receipt_amount": "0.10", "buyer_pay_amount": "0.10",
		"sign_type": "RSA2", "app_id": "2019073166072302", "seller_id": "2088531891668739", "gmt_payment": "2019-08-15 15:56:24",
		"notify_time": "2019-08-15 15:56:25", "version": "1.0", "out_trade_no": "20190815155618536-564-57", "total_amount": "0.10",
		"trade_no": "2019081522001468450512505578", "auth_app_id": "2019073166072302", "buyer_logon_id": "xud***@126.com", "point_amount": "0.00",
	}
	alipayVectorMarketKey = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk6DCsBIUhWriFohzRV8Fic6oQWNnLKKILNk97VU5qcHEuxYzCujKoyva5gy1170mFJw4IcgJF8AyS7iDUwzAwF4Pp9CpWxDhUhe7mdQJhjBmvTcPLGFFrzlj6unO5lAcbdwaxPUtSxOaNxPJGrTK/wnKQSbjTMMltp1J68q2Tfgrsn/NdZ6lrxO9rvmky8kowqaH5NjntyHO59jCGabMj5sI14z8N61wB/QuIJrDuzIPMPrSNbq0cOWcSCDG09oUHTp9fk7suDB8UiFcmVTXOvK3d4HbeX8V9YsEMxrwxEoYgRRj6K2qrC6oxw480cqf2ueumCmHg6xrcgkyXK81hwIDAQAB"
	alipayVectorMarket    = map[string]string{
		"app_id": "2017122801303261", "charset": "UTF-8", "commodity_order_id": "2019030800000018079639", "contactor": "技术支持测试的公司",
		"merchant_pid": "2088721996721370", "method": "alipay.open.servicemarket.order.notify", "name": "技术支持测试的公司",
		"notify_id": "2019030800222102023008121054923345", "notify_time": "2019-03-08 10:20:23", "notify_type": "servicemarket_order_notify",
		"order_item_num": "1", "order_ticket": "29b1c37d99ab48c5bd5bdaeaeaefbB37", "order_time": "2019-03-08 10:20:08", "phone": "17826894615",
		"service_code": "58621634",
		"sign":         "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzFGRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVwXxOtsuB+bstra+W7aw9x9DvkKgdSRw==",
		"sign_type":    "RSA2", "timestamp": "2019-03-08 10:20:23", "title": "麦禾商城模版", "total_price": "0.00", "version": "1.0",
	}
)

func alipayVectorKey(t *testing.T, b64 string) *rsa.PublicKey {
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

func TestAlipayPublishedSignatureVectors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		key      string
		params   map[string]string
		excluded []string
	}{
		{"trade notification", alipayVectorTradeKey, alipayVectorTrade, []string{"sign", "sign_type"}},
		{"service-market notification", alipayVectorMarketKey, alipayVectorMarket, []string{"sign"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pub := alipayVectorKey(t, c.key)
			v := url.Values{}
			for k, x := range c.params {
				v.Set(k, x)
			}
			sig, _ := base64.StdEncoding.DecodeString(v.Get("sign"))
			if err := alipayRSAVerify(pub, []byte(alipaySignContent(v, c.excluded...)), sig); err != nil {
				t.Fatalf("the simulator's sign content does not verify the published example: %v", err)
			}
			v.Set("total_amount", "100.00")
			v.Set("title", "tampered")
			if err := alipayRSAVerify(pub, []byte(alipaySignContent(v, c.excluded...)), sig); err == nil {
				t.Fatal("a tampered example verifies")
			}
		})
	}
}

func TestAlipayYuan(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in  string
		fen int64
		ok  bool
	}{
		{"0.01", 1, true}, {"1", 100, true}, {"1.5", 150, true}, {"100000000.00", 10000000000, true},
		{"1000000000", 0, false}, {"01", 0, false}, {"1.", 0, false}, {".1", 0, false}, {"1.001", 0, false}, {"", 0, false},
	} {
		fen, ok := alipayParseYuan(c.in)
		if ok != c.ok || fen != c.fen {
			t.Errorf("alipayParseYuan(%q) = %d, %t", c.in, fen, ok)
		}
	}
	for fen, want := range map[int64]string{0: "0.00", 1: "0.01", 150: "1.50", 10000000000: "100000000.00", -150: "-1.50"} {
		if got := alipayFormatYuan(fen); got != want {
			t.Errorf("alipayFormatYuan(%d) = %q, want %q", fen, got, want)
		}
	}
}
