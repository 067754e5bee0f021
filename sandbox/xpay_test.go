package sandbox

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	mpcontext "github.com/silenceper/wechat/v2/miniprogram/context"
	"github.com/silenceper/wechat/v2/miniprogram/virtualpayment"
)

// xpaySim is a simulator with one WeChat app with virtual payment.
type xpaySim struct {
	*wechatSim
	token string
}

func newXPaySim(t *testing.T, spec AppSpec) *xpaySim {
	t.Helper()
	spec.VirtualPayment = true
	w := newWeChatSim(t, spec)
	return &xpaySim{wechatSim: w, token: w.stableToken(t, false)}
}

// loginUser logs user in and returns their openid and session key.
func (x *xpaySim) loginUser(t *testing.T, user string) (string, string) {
	t.Helper()
	out := x.login(t, x.app.AppID, x.app.AppSecret, x.mint(t, user, "login"))
	return out["openid"].(string), out["session_key"].(string)
}

// silenceperSigner signs as silenceper's virtualpayment package does.
func silenceperSigner(appKey, sessionKey string) *virtualpayment.VirtualPayment {
	vp := virtualpayment.NewVirtualPayment(&mpcontext.Context{Config: &mpconfig.Config{AppKey: appKey}})
	vp.SetSessionKey(sessionKey)
	return vp
}

// api posts body to /xpay/<api> with the given query signatures.
func (x *xpaySim) api(t *testing.T, api, body string, q url.Values) map[string]any {
	t.Helper()
	q.Set("access_token", x.token)
	req := httptest.NewRequest(http.MethodPost, "/wechat/xpay/"+api+"?"+q.Encode(), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := x.h.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %q", api, raw)
	}
	return out
}

// signed posts body signed by vp: pay_sig always, the user's signature
// when user is set.
func (x *xpaySim) signed(t *testing.T, vp *virtualpayment.VirtualPayment, api, body string, user bool) map[string]any {
	t.Helper()
	q := url.Values{}
	ps, err := vp.PaySign("/xpay/"+api, body)
	if err != nil {
		t.Fatal(err)
	}
	q.Set("pay_sig", ps)
	if user {
		sig, err := vp.Signature(body)
		if err != nil {
			t.Fatal(err)
		}
		q.Set("signature", sig)
	}
	return x.api(t, api, body, q)
}

// The simulator's HMAC is the one of §N2.2's vectors.
func TestXPaySimulatorSignVector(t *testing.T) {
	t.Parallel()
	signData := `{"offerId":"123","buyQuantity":1,"env":0,"currencyType":"CNY","productId":"testproductId","goodsPrice":10,"outTradeNo":"xxxxxx","attach":"testdata"}`
	if got := xpaySign("12345", "requestVirtualPayment&"+signData); got != "0ce2a9fcab3532e9f78dd3beb841806c0c08a24ec26b04c366584ac06d852bb0" {
		t.Fatalf("paySig %s", got)
	}
	if got := xpaySign("o0q0otL8aEzpcZL/FT9WsQ==", `{"foo":"bar"}`); got != "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b" {
		t.Fatalf("login-state signature %s", got)
	}
}

// Requests signed by silenceper's own signer pass; the signature set is
// enforced per API (query_user_balance needs the user's signature,
// query_order does not), a wrong AppKey is 268490003 and a stale session
// key 268490009; wx.requestVirtualPayment with silenceper's signatures
// pays.
func TestXPayAPISignaturesWithSilenceper(t *testing.T) {
	t.Parallel()
	x := newXPaySim(t, AppSpec{Key: testKey})
	openid, sk := x.loginUser(t, "ann")
	vp := silenceperSigner(x.app.XPay.AppKey, sk)
	balance := `{"openid":"` + openid + `","env":0,"user_ip":"127.0.0.1"}`

	if out := x.signed(t, vp, "query_user_balance", balance, true); errcode(out) != 0 || out["first_save_flag"] != true {
		t.Fatalf("balance: %v", out)
	}
	if out := x.signed(t, vp, "query_user_balance", balance, false); errcode(out) != xpayErrSign {
		t.Fatalf("balance without signature: %v", out)
	}
	if out := x.signed(t, silenceperSigner("wrong-key", sk), "query_user_balance", balance, true); errcode(out) != xpayErrSign {
		t.Fatalf("balance with a wrong AppKey: %v", out)
	}
	if out := x.signed(t, silenceperSigner(x.app.XPay.SandboxAppKey, sk), "query_user_balance", balance, true); errcode(out) != xpayErrSign {
		t.Fatalf("production body signed with the sandbox AppKey: %v", out)
	}
	order := `{"openid":"` + openid + `","env":0,"order_id":"NO_SUCH_ORDER"}`
	if out := x.signed(t, vp, "query_order", order, false); errcode(out) != xpayErrParam {
		t.Fatalf("query_order with pay_sig only: %v", out)
	}

	// wx.requestVirtualPayment, signed by silenceper.
	signData := `{"offerId":"` + x.app.XPay.OfferID + `","buyQuantity":30,"env":0,"currencyType":"CNY","outTradeNo":"COIN_SP_001","attach":""}`
	paySig, _ := vp.PaySign("requestVirtualPayment", signData)
	sig, _ := vp.Signature(signData)
	rep, err := x.s.RequestVirtualPayment(context.Background(), x.app, "ann", XPayPayment{Mode: XPayModeCoins, SignData: signData, PaySig: paySig, Signature: sig, Faults: Faults{Drop: true}})
	if err != nil || !rep.Dropped {
		t.Fatalf("payment: %+v, %v", rep, err)
	}
	if c := x.s.XPayCoins(x.app.ID, 0, "ann"); c.Balance != 30 {
		t.Fatalf("coins %+v", c)
	}

	// The key expires: calls signed with it are 268490009, checksession 87009.
	x.s.ExpireSessionKey(x.app.ID, "ann")
	if out := x.signed(t, vp, "query_user_balance", balance, true); errcode(out) != xpayErrSessionKey {
		t.Fatalf("stale key: %v", out)
	}
	q := url.Values{"openid": {openid}, "signature": {xpaySign(sk, "")}, "sig_method": {"hmac_sha256"}, "access_token": {x.token}}
	if out := x.call(t, http.MethodGet, "/wechat/wxa/checksession?"+q.Encode(), nil); errcode(out) != wechatErrBadSig {
		t.Fatalf("checksession with the stale key: %v", out)
	}
	_, sk2 := x.loginUser(t, "ann")
	q.Set("signature", xpaySign(sk2, ""))
	if out := x.call(t, http.MethodGet, "/wechat/wxa/checksession?"+q.Encode(), nil); errcode(out) != 0 {
		t.Fatalf("checksession with the new key: %v", out)
	}
	// A key that was never the user's is a signature error, not expiry.
	if out := x.signed(t, silenceperSigner(x.app.XPay.AppKey, "bm90IHRoZSBrZXkgISEhIQ=="), "query_user_balance", balance, true); errcode(out) != xpayErrSign {
		t.Fatalf("foreign key: %v", out)
	}
}

// xpayReceiver answers virtual payment pushes: the first n with "success"
// (which WeChat does not take for these events), then with the JSON ack.
type xpayReceiver struct {
	mu     sync.Mutex
	n      int
	bodies []map[string]any
}

func (r *xpayReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	raw, _ := io.ReadAll(req.Body)
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	r.mu.Lock()
	r.bodies = append(r.bodies, m)
	refuse := len(r.bodies) <= r.n
	r.mu.Unlock()
	if refuse {
		_, _ = io.WriteString(w, "success")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ErrCode":0,"ErrMsg":"success"}`)
}

func (r *xpayReceiver) received() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.bodies...)
}

// pay has user pay a goods order with correctly signed params.
func (x *xpaySim) pay(t *testing.T, user, outTradeNo string, f Faults) (*Report, error) {
	t.Helper()
	_, sk := x.loginUser(t, user)
	signData := `{"offerId":"` + x.app.XPay.OfferID + `","buyQuantity":2,"env":0,"currencyType":"CNY","productId":"p1","goodsPrice":250,"outTradeNo":"` + outTradeNo + `","attach":"a"}`
	return x.s.RequestVirtualPayment(context.Background(), x.app, user, XPayPayment{Mode: XPayModeGoods, SignData: signData,
		PaySig: xpaySign(x.app.XPay.AppKey, "requestVirtualPayment&"+signData), Signature: xpaySign(sk, signData), Faults: f})
}

// Pushes are acknowledged only by {"ErrCode":0}: "success" is retried (with
// a redelivery schedule), rebuilt each time, at most 15 attempts; the
// amount, duplicates and drop faults do what they say; an acknowledged
// delivery marks the order delivered.
func TestXPayPushes(t *testing.T) {
	t.Parallel()
	rcv := &xpayReceiver{n: 2}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	x := newXPaySim(t, AppSpec{Key: testKey, PublicURL: srv.URL, MessageMode: PushModePlaintext, MessageFormat: PushFormatJSON})
	x.s.SetRedelivery([]time.Duration{time.Millisecond, time.Millisecond, time.Millisecond})

	rep, err := x.pay(t, "bob", "GOODS_P_001", Faults{})
	if err != nil || len(rep.Deliveries) != 1 || rep.Deliveries[0].Acked {
		t.Fatalf("first delivery %+v, %v", rep, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := x.s.WaitRedelivered(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	got := rcv.received()
	if len(got) != 3 {
		t.Fatalf("%d deliveries, want 3 (two refused, one acknowledged)", len(got))
	}
	p := got[2]
	goods, _ := p["GoodsInfo"].(map[string]any)
	if p["Event"] != "xpay_goods_deliver_notify" || p["OutTradeNo"] != "GOODS_P_001" || p["FromUserName"] != xpayOfficialOpenID ||
		goods["ActualPrice"] != float64(500) || goods["ProductId"] != "p1" || p["CreateTime"] != got[0]["CreateTime"] {
		t.Fatalf("push %v", p)
	}
	x.s.xpay.mu.Lock()
	status := x.s.xpay.orders[xpayKey(x.app.ID, 0, "GOODS_P_001")].status
	x.s.xpay.mu.Unlock()
	if status != xpayStatusPaid { // delivered only when XPayDeliver's own attempt is acknowledged
		t.Fatalf("status %d", status)
	}

	// Faults: a wrong amount, duplicates; a dropped push changes nothing
	// at the receiver but the order is paid.
	rep, err = x.pay(t, "bob", "GOODS_P_002", Faults{Amount: ptr(int64(1)), Duplicates: 2})
	if err != nil || len(rep.Deliveries) != 3 {
		t.Fatalf("faulty delivery %+v, %v", rep, err)
	}
	for _, d := range rep.Deliveries {
		if !d.Acked {
			t.Fatalf("delivery not acknowledged: %+v", d)
		}
	}
	last := rcv.received()
	if g := last[len(last)-1]["GoodsInfo"].(map[string]any); g["ActualPrice"] != float64(1) {
		t.Fatalf("amount fault: %v", g)
	}
	before := len(rcv.received())
	rep, err = x.pay(t, "bob", "GOODS_P_003", Faults{Drop: true})
	if err != nil || !rep.Dropped || len(rcv.received()) != before {
		t.Fatalf("dropped push %+v, %v", rep, err)
	}

	// A refund push counts its retries.
	rcv.mu.Lock()
	rcv.n, rcv.bodies = 2, nil
	rcv.mu.Unlock()
	body := `{"openid":"` + x.s.User(x.app, "bob").OpenID + `","order_id":"GOODS_P_003","refund_order_id":"RF_P_003","left_fee":500,"refund_fee":200,"biz_meta":"","refund_reason":"0","req_from":"3","env":0}`
	if out := x.api(t, "refund_order", body, url.Values{"pay_sig": {xpaySign(x.app.XPay.AppKey, "/xpay/refund_order&"+body)}}); errcode(out) != 0 {
		t.Fatalf("refund_order: %v", out)
	}
	testEventually(t, func() bool { return len(rcv.received()) == 3 })
	for i, b := range rcv.received() {
		if b["Event"] != "xpay_refund_notify" || b["RetryTimes"] != float64(i) || b["MchRefundId"] != "RF_P_003" || b["RefundFee"] != float64(200) {
			t.Fatalf("refund push %d: %v", i, b)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func testEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// At most 15 attempts, however long the schedule.
func TestXPayPushAttemptsAreBounded(t *testing.T) {
	t.Parallel()
	rcv := &xpayReceiver{n: 100}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	x := newXPaySim(t, AppSpec{Key: testKey, PublicURL: srv.URL, MessageMode: PushModePlaintext, MessageFormat: PushFormatJSON})
	schedule := make([]time.Duration, 30)
	for i := range schedule {
		schedule[i] = time.Millisecond
	}
	x.s.SetRedelivery(schedule)
	if _, err := x.pay(t, "cy", "GOODS_B_001", Faults{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := x.s.WaitRedelivered(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	if n := len(rcv.received()); n != xpayMaxAttempts {
		t.Fatalf("%d attempts, want %d", n, xpayMaxAttempts)
	}
}

// wx.requestVirtualPayment's checks: strict signData number types, the
// offer id, a configured price, the outTradeNo pattern.
func TestXPayRequestVirtualPaymentChecks(t *testing.T) {
	t.Parallel()
	x := newXPaySim(t, AppSpec{Key: testKey})
	x.app.XPay.Products = map[string]int64{"p1": 250}
	_, sk := x.loginUser(t, "dee")
	for _, tc := range []struct {
		name, signData string
	}{
		{"string buyQuantity", `{"offerId":"OFFER","buyQuantity":"2","env":0,"currencyType":"CNY","productId":"p1","goodsPrice":250,"outTradeNo":"GOODS_C_001","attach":""}`},
		{"other offer", `{"offerId":"1","buyQuantity":2,"env":0,"currencyType":"CNY","productId":"p1","goodsPrice":250,"outTradeNo":"GOODS_C_002","attach":""}`},
		{"wrong price", `{"offerId":"OFFER","buyQuantity":2,"env":0,"currencyType":"CNY","productId":"p1","goodsPrice":200,"outTradeNo":"GOODS_C_003","attach":""}`},
		{"short outTradeNo", `{"offerId":"OFFER","buyQuantity":2,"env":0,"currencyType":"CNY","productId":"p1","goodsPrice":250,"outTradeNo":"G1","attach":""}`},
		{"leading underscore", `{"offerId":"OFFER","buyQuantity":2,"env":0,"currencyType":"CNY","productId":"p1","goodsPrice":250,"outTradeNo":"_GOODS_C_04","attach":""}`},
		{"no product", `{"offerId":"OFFER","buyQuantity":2,"env":0,"currencyType":"CNY","outTradeNo":"GOODS_C_005","attach":""}`},
	} {
		signData := strings.ReplaceAll(tc.signData, "OFFER", x.app.XPay.OfferID)
		_, err := x.s.RequestVirtualPayment(context.Background(), x.app, "dee", XPayPayment{Mode: XPayModeGoods, SignData: signData,
			PaySig: xpaySign(x.app.XPay.AppKey, "requestVirtualPayment&"+signData), Signature: xpaySign(sk, signData), Faults: Faults{Drop: true}})
		var ce *XPayClientError
		if !errors.As(err, &ce) || ce.ErrCode != xpayClientParam {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// download_bill: 268490011 until the day's bill is ready, then a url
// serving the day's payments and refunds in fen.
func TestXPayDownloadBill(t *testing.T) {
	t.Parallel()
	x := newXPaySim(t, AppSpec{Key: testKey})
	if _, err := x.pay(t, "eli", "GOODS_D_001", Faults{Drop: true}); err != nil {
		t.Fatal(err)
	}
	day := x.clock.Now().In(wechatPayZone).Format("20060102")
	body := `{"begin_ds":"` + day + `","end_ds":"` + day + `"}`
	q := func() url.Values {
		return url.Values{"pay_sig": {xpaySign(x.app.XPay.AppKey, "/xpay/download_bill&"+body)}}
	}
	if out := x.api(t, "download_bill", body, q()); errcode(out) != xpayErrBillPending {
		t.Fatalf("before ready: %v", out)
	}
	x.clock.Advance(24 * time.Hour)
	x.token = x.stableToken(t, false)
	out := x.api(t, "download_bill", body, q())
	u, _ := out["url"].(string)
	if errcode(out) != 0 || u == "" {
		t.Fatalf("ready: %v", out)
	}
	parsed, _ := url.Parse(u)
	resp, err := x.h.Test(httptest.NewRequest(http.MethodGet, parsed.Path, nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("bill %v, %v", rows, err)
	}
	if rows[1][1] != "支付" || rows[1][2] != "GOODS_D_001" || rows[1][10] != "500" {
		t.Fatalf("row %v", rows[1])
	}
}
