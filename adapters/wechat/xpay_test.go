package wechat_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

// loginKeys holds the session keys of the logins a test made, as the
// sessions store would after them: an adapter test's stand-in for
// sessions.KeyReader (which is tested against Postgres in sessions).
type loginKeys struct {
	mu   sync.Mutex
	keys map[string]string // app|openid → key
}

func (k *loginKeys) SessionKey(_ context.Context, app, openid string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, ok := k.keys[app+"|"+openid]
	if !ok {
		return "", adapters.ErrNoSessionKey
	}
	return key, nil
}

// xpayEnv is an app with virtual payment at the simulator, its pushes
// received by rcv, and the adapter.
type xpayEnv struct {
	sim  *sandbox.Sandbox
	sb   *sandbox.App
	cfg  *config.App
	opts adapters.Options
	x    *wechat.XPay
	rcv  *messageReceiver
	keys *loginKeys
}

func xpaySetup(t *testing.T, spec sandbox.AppSpec) *xpayEnv {
	t.Helper()
	e := &xpayEnv{rcv: &messageReceiver{t: t}, keys: &loginKeys{keys: map[string]string{}}}
	srv := httptest.NewServer(e.rcv)
	t.Cleanup(srv.Close)
	spec.PublicURL, spec.VirtualPayment = srv.URL, true
	e.sim, e.sb, e.cfg, e.opts = simApp(t, spec)
	if err := config.Finish(&config.Config{DatabaseURL: "x", SecretKey: strings.Repeat("s", 32), Apps: []*config.App{e.cfg}}); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.rcv.verifier, err = wechat.NewMessageVerifier(e.cfg, e.opts); err != nil {
		t.Fatal(err)
	}
	e.rcv.app = e.sb
	e.opts.Tokens = &testenv.FetcherTokens{F: wechat.NewTokenFetcher(e.cfg, e.opts)}
	e.opts.SessionKeys = e.keys
	if e.x, err = wechat.NewXPay(e.cfg, e.opts); err != nil {
		t.Fatal(err)
	}
	return e
}

// login logs user name in (jscode2session at the simulator) and keeps the
// session key, as minigate's sessions would; it returns the openid.
func (e *xpayEnv) login(t *testing.T, name string) string {
	t.Helper()
	code, err := e.sim.MintCode(e.sb.ID, name, "login")
	if err != nil {
		t.Fatal(err)
	}
	l, err := newClient(t, e.cfg, e.opts).Code2Session(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	e.keys.mu.Lock()
	e.keys.keys[e.cfg.ID+"|"+l.OpenID] = l.SessionKey
	e.keys.mu.Unlock()
	return l.OpenID
}

// pay presents pay params to the simulated user's wx.requestVirtualPayment.
func (e *xpayEnv) pay(t *testing.T, name string, params map[string]string, f sandbox.Faults) (*sandbox.Report, error) {
	t.Helper()
	return e.sim.RequestVirtualPayment(context.Background(), e.sb, name, sandbox.XPayPayment{
		Mode: params["mode"], SignData: params["signData"], PaySig: params["paySig"], Signature: params["signature"], Faults: f,
	})
}

func wantXPayError(t *testing.T, err error, reason adapters.Reason, code string) {
	t.Helper()
	pe, ok := adapters.AsPlatformError(err)
	if !ok || pe.Reason != reason || (code != "" && pe.Code != code) || pe.Platform != wechat.XPayPlatform {
		t.Fatalf("err = %v, want xpay reason %s code %q", err, reason, code)
	}
}

// A goods purchase: the simulated WeChat accepts minigate's pay params
// (paySig with the AppKey, signature with the session key), charges
// quantity × price and pushes the delivery, which parses back to what was
// bought; query_order then reports it paid and delivered.
func TestXPayGoodsPurchase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, format := range []string{"xml", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			e := xpaySetup(t, sandbox.AppSpec{MessageFormat: format})
			openid := e.login(t, "ann")
			params, err := e.x.PayParams(ctx, wechat.XPayPurchase{
				Mode: wechat.XPayModeGoods, OpenID: openid, OutTradeNo: "GOODS_0001", ProductID: "gem_pack",
				GoodsPrice: 600, Quantity: 2, Attach: "order-7",
			})
			if err != nil {
				t.Fatal(err)
			}
			if params["mode"] != wechat.XPayModeGoods || !strings.Contains(params["signData"], `"goodsPrice":600`) {
				t.Fatalf("pay params %v", params)
			}
			rep, err := e.pay(t, "ann", params, sandbox.Faults{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Deliveries) != 1 || e.rcv.count() != 1 {
				t.Fatalf("deliveries %+v, received %d", rep.Deliveries, e.rcv.count())
			}
			msg, _ := e.rcv.last()
			if msg.Event != wechat.XPayEventGoodsDeliver {
				t.Fatalf("event %q", msg.Event)
			}
			p, err := wechat.ParseXPayPush(msg.Event, msg.Fields)
			if err != nil {
				t.Fatal(err)
			}
			if p.OpenID != openid || p.OutTradeNo != "GOODS_0001" || p.ProductID != "gem_pack" || p.Quantity != 2 ||
				p.ActualPrice != 1200 || p.Attach != "order-7" || p.Env != 0 || p.TransactionID == "" || p.PaidAt.IsZero() {
				t.Fatalf("push %+v", p)
			}
			if p.DedupKey() != "xpay_goods_deliver_notify:GOODS_0001" {
				t.Fatalf("dedup key %q", p.DedupKey())
			}
			o, err := e.x.QueryOrder(ctx, openid, "GOODS_0001")
			if err != nil {
				t.Fatal(err)
			}
			// The receiver answers "success", not the xpay JSON: the
			// platform keeps the order undelivered.
			if !o.Paid() || o.Status != wechat.XPayStatusPaid || o.PaidFee != 1200 || o.LeftFee != 1200 || o.EnvType != 1 {
				t.Fatalf("order %+v", o)
			}
			if err := e.x.NotifyProvideGoods(ctx, "GOODS_0001"); err != nil {
				t.Fatal(err)
			}
			if o, _ = e.x.QueryOrder(ctx, openid, "GOODS_0001"); o.Status != wechat.XPayStatusDelivered {
				t.Fatalf("after notify_provide_goods: status %d", o.Status)
			}
			if _, err := e.x.QueryOrder(ctx, openid, "NOT_AN_ORDER"); !adapters.HasReason(err, adapters.ReasonNotFound) {
				t.Fatalf("unknown order: %v", err)
			}
			// The outTradeNo is single use.
			if _, err := e.pay(t, "ann", params, sandbox.Faults{}); err == nil {
				t.Fatal("a used outTradeNo was accepted")
			}
		})
	}
}

// The simulated WeChat refuses pay params signed with the wrong AppKey or
// session key, as wx.requestVirtualPayment does (-15006, -15005).
func TestXPayPaymentRefusesBadSignatures(t *testing.T) {
	t.Parallel()
	e := xpaySetup(t, sandbox.AppSpec{})
	openid := e.login(t, "bob")
	params, err := e.x.PayParams(context.Background(), wechat.XPayPurchase{
		Mode: wechat.XPayModeCoins, OpenID: openid, OutTradeNo: "COINS_0001", Quantity: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	var ce *sandbox.XPayClientError
	bad := map[string]string{}
	for k, v := range params {
		bad[k] = v
	}
	bad["paySig"] = wechat.XPaySig("another-app-key", "requestVirtualPayment", []byte(params["signData"]))
	if _, err := e.pay(t, "bob", bad, sandbox.Faults{}); !errors.As(err, &ce) || ce.ErrCode != -15006 {
		t.Fatalf("wrong AppKey: %v", err)
	}
	bad["paySig"], bad["signature"] = params["paySig"], wechat.XPayUserSignature("bm90IHRoZSBrZXkgISEhIQ==", []byte(params["signData"]))
	if _, err := e.pay(t, "bob", bad, sandbox.Faults{}); !errors.As(err, &ce) || ce.ErrCode != -15005 {
		t.Fatalf("wrong session key: %v", err)
	}
	if _, err := e.pay(t, "bob", params, sandbox.Faults{}); err != nil {
		t.Fatalf("genuine params: %v", err)
	}
	if c := e.sim.XPayCoins(e.sb.ID, 0, "bob"); c.Balance != 50 || c.SumSave != 50 {
		t.Fatalf("coins after buying 50: %+v", c)
	}
}

// A session key WeChat no longer honours (expired, or replaced by a login
// elsewhere) makes PayParams fail with session_key_expired before any
// signature is handed out; so does a user minigate has no key for.
func TestXPayStaleSessionKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := xpaySetup(t, sandbox.AppSpec{})
	openid := e.login(t, "cat")
	if !e.sim.ExpireSessionKey(e.sb.ID, "cat") {
		t.Fatal("no key expired")
	}
	purchase := wechat.XPayPurchase{Mode: wechat.XPayModeCoins, OpenID: openid, OutTradeNo: "COINS_0002", Quantity: 10}
	_, err := e.x.PayParams(ctx, purchase)
	wantXPayError(t, err, adapters.ReasonSessionKeyExpired, "87009")
	if ae := adapters.ToAppError(err); !strings.Contains(ae.Error(), "session_key_expired") {
		t.Fatalf("API error %v", ae)
	}
	// The API that needs the signature says the same (268490009).
	_, err = e.x.QueryBalance(ctx, openid, "127.0.0.1")
	wantXPayError(t, err, adapters.ReasonSessionKeyExpired, "268490009")

	purchase.OpenID = "o-never-logged-in"
	_, err = e.x.PayParams(ctx, purchase)
	wantXPayError(t, err, adapters.ReasonSessionKeyExpired, "")

	// A new login makes the key current again.
	e.login(t, "cat")
	purchase.OpenID = openid
	if _, err := e.x.PayParams(ctx, purchase); err != nil {
		t.Fatalf("after a new login: %v", err)
	}
}

// Coins: bought, spent (currency_pay, signed with pay_sig and the user's
// signature), a repeat of the same spend, too many coins, a cancellation
// and a present; the balance follows at the platform.
func TestXPayCoins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := xpaySetup(t, sandbox.AppSpec{})
	openid := e.login(t, "dan")
	params, err := e.x.PayParams(ctx, wechat.XPayPurchase{Mode: wechat.XPayModeCoins, OpenID: openid, OutTradeNo: "COINS_0003", Quantity: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay(t, "dan", params, sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	msg, _ := e.rcv.last()
	p, err := wechat.ParseXPayPush(msg.Event, msg.Fields)
	if err != nil || p.Event != wechat.XPayEventCoinPay || p.Quantity != 100 || p.ActualPrice != 100*sandbox.DemoCoinPrice {
		t.Fatalf("coin push %+v, %v", p, err)
	}
	b, err := e.x.QueryBalance(ctx, openid, "127.0.0.1")
	if err != nil || b.Balance != 100 || b.SumSave != 100 || b.FirstSave {
		t.Fatalf("balance %+v, %v", b, err)
	}
	spend := wechat.XPaySpend{OpenID: openid, UserIP: "127.0.0.1", OrderID: "SPEND_0001", Amount: 30,
		Items: []wechat.XPayPayItem{{ProductID: "episode_3", UnitPrice: 30, Quantity: 1}}}
	spent, err := e.x.Spend(ctx, spend)
	if err != nil || spent.Balance != 70 || spent.OrderID != "SPEND_0001" {
		t.Fatalf("spend %+v, %v", spent, err)
	}
	if _, err := e.x.Spend(ctx, spend); !wechat.IsRepeated(err) {
		t.Fatalf("repeated spend: %v", err)
	}
	_, err = e.x.Spend(ctx, wechat.XPaySpend{OpenID: openid, UserIP: "127.0.0.1", OrderID: "SPEND_0002", Amount: 71})
	wantXPayError(t, err, adapters.ReasonInsufficientFunds, "268490006")
	if err := e.x.CancelSpend(ctx, wechat.XPayCancelSpend{OpenID: openid, UserIP: "127.0.0.1", PayOrderID: "SPEND_0001",
		OrderID: "CANCEL_0001", Amount: 10}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a repeat of the same present is a success
		if err := e.x.Present(ctx, wechat.XPayPresent{OpenID: openid, OrderID: "GIFT_0001", Amount: 5}); err != nil {
			t.Fatal(err)
		}
	}
	if b, err = e.x.QueryBalance(ctx, openid, "127.0.0.1"); err != nil || b.Balance != 85 || b.PresentBalance != 5 || b.SumCost != 20 {
		t.Fatalf("balance after spend, cancel and present: %+v, %v", b, err)
	}
}

// A refund: refund_order is sent the order's current left_fee, the refund
// settles and its push parses; a second refund larger than what is left is
// refused.
func TestXPayRefund(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := xpaySetup(t, sandbox.AppSpec{MessageFormat: "json"})
	openid := e.login(t, "eve")
	params, err := e.x.PayParams(ctx, wechat.XPayPurchase{Mode: wechat.XPayModeGoods, OpenID: openid,
		OutTradeNo: "GOODS_0002", ProductID: "vip_month", GoodsPrice: 1800, Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay(t, "eve", params, sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	started, err := e.x.Refund(ctx, wechat.XPayRefundRequest{OpenID: openid, OrderID: "GOODS_0002", RefundOrderID: "RF_GOODS_0002_1", RefundFee: 800, Reason: "3", ReqFrom: "2"})
	if err != nil || started.RefundOrderID != "RF_GOODS_0002_1" || started.PayOrderID != "GOODS_0002" {
		t.Fatalf("refund %+v, %v", started, err)
	}
	testenv.Eventually(t, 5e9, "the refund push", func() bool {
		msg, _ := e.rcv.last()
		return msg.Event == wechat.XPayEventRefund
	})
	msg, _ := e.rcv.last()
	p, err := wechat.ParseXPayPush(msg.Event, msg.Fields)
	if err != nil || !p.RefundOK || p.RefundID != "RF_GOODS_0002_1" || p.OutTradeNo != "GOODS_0002" || p.RefundFee != 800 ||
		p.DedupKey() != "xpay_refund_notify:RF_GOODS_0002_1" {
		t.Fatalf("refund push %+v, %v", p, err)
	}
	r, err := e.x.QueryOrder(ctx, openid, "RF_GOODS_0002_1")
	if err != nil || r.OrderType != 1 || r.Status != wechat.XPayStatusRefunded || r.RefundFee != 800 {
		t.Fatalf("refund order %+v, %v", r, err)
	}
	o, err := e.x.QueryOrder(ctx, openid, "GOODS_0002")
	if err != nil || o.LeftFee != 1000 || o.Status != wechat.XPayStatusRefunded {
		t.Fatalf("paid order after the refund %+v, %v", o, err)
	}
	_, err = e.x.Refund(ctx, wechat.XPayRefundRequest{OpenID: openid, OrderID: "GOODS_0002", RefundOrderID: "RF_GOODS_0002_2", RefundFee: 1001})
	wantXPayError(t, err, adapters.ReasonInvalidRequest, "268490002")
}

// The sandbox environment signs with the sandbox AppKey and puts env 1 in
// signData and every body; the simulator checks each with that key.
func TestXPaySandboxEnv(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := xpaySetup(t, sandbox.AppSpec{VirtualPaymentEnv: config.VirtualPaymentSandbox})
	if e.x.Env() != wechat.XPayEnvSandbox {
		t.Fatalf("env %d", e.x.Env())
	}
	openid := e.login(t, "fay")
	params, err := e.x.PayParams(ctx, wechat.XPayPurchase{Mode: wechat.XPayModeCoins, OpenID: openid, OutTradeNo: "SBX_00001", Quantity: 20})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(params["signData"], `"env":1`) ||
		params["paySig"] != wechat.XPaySig(e.sb.XPay.SandboxAppKey, "requestVirtualPayment", []byte(params["signData"])) {
		t.Fatalf("sandbox pay params %v", params)
	}
	if _, err := e.pay(t, "fay", params, sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	msg, _ := e.rcv.last()
	if p, err := wechat.ParseXPayPush(msg.Event, msg.Fields); err != nil || p.Env != wechat.XPayEnvSandbox {
		t.Fatalf("push %+v, %v", p, err)
	}
	if o, err := e.x.QueryOrder(ctx, openid, "SBX_00001"); err != nil || o.EnvType != 2 {
		t.Fatalf("sandbox order %+v, %v", o, err)
	}
	if c := e.sim.XPayCoins(e.sb.ID, 1, "fay"); c.Balance != 20 {
		t.Fatalf("sandbox coins %+v", c)
	}
}

// Calls signed with another AppKey are refused with 268490003 (our
// credentials are wrong).
func TestXPayWrongAppKey(t *testing.T) {
	t.Parallel()
	e := xpaySetup(t, sandbox.AppSpec{})
	openid := e.login(t, "gus")
	e.cfg.VirtualPayment.AppKey = "not-the-app-key"
	x, err := wechat.NewXPay(e.cfg, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = x.QueryOrder(context.Background(), openid, "ANY_ORDER1")
	wantXPayError(t, err, adapters.ReasonAuth, "268490003")
}

// The daily bill: not ready before 10:00 the next day unless marked ready,
// then the day's payments and refunds, read by column name.
func TestXPayBill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := xpaySetup(t, sandbox.AppSpec{})
	openid := e.login(t, "hal")
	params, err := e.x.PayParams(ctx, wechat.XPayPurchase{Mode: wechat.XPayModeGoods, OpenID: openid,
		OutTradeNo: "BILL_00001", ProductID: "skin", GoodsPrice: 300, Quantity: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pay(t, "hal", params, sandbox.Faults{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.x.Refund(ctx, wechat.XPayRefundRequest{OpenID: openid, OrderID: "BILL_00001", RefundOrderID: "RF_BILL_00001", RefundFee: 300}); err != nil {
		t.Fatal(err)
	}
	today := reconcile.DateOf(e.opts.Clock()())
	if _, err := e.x.DownloadBill(ctx, today); !errors.Is(err, reconcile.ErrNotReady) {
		t.Fatalf("today's bill: %v", err)
	}
	if err := e.sim.MarkBillReady(e.sb.ID, today.String()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5e9, "the refund to settle", func() bool {
		o, err := e.x.QueryOrder(ctx, openid, "RF_BILL_00001")
		return err == nil && o.Status == wechat.XPayStatusRefunded
	})
	bill, err := e.x.DownloadBill(ctx, today)
	if err != nil {
		t.Fatal(err)
	}
	if len(bill.Rows) != 2 || bill.Platform != wechat.XPayPlatform {
		t.Fatalf("bill %+v", bill)
	}
	pay, refund := bill.Rows[0], bill.Rows[1]
	if pay.Kind != reconcile.KindPayment || pay.OutTradeNo != "BILL_00001" || pay.Amount != 900 || pay.Fee <= 0 ||
		refund.Kind != reconcile.KindRefund || refund.OutRefundNo != "RF_BILL_00001" || refund.Amount != 300 || refund.Fee >= 0 {
		t.Fatalf("rows %+v", bill.Rows)
	}
}
