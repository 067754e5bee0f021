package sandbox

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/downloader"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/jsapi"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"github.com/minigate/minigate/internal/config"
)

// These tests cross-check the WeChat Pay simulator against wechatpay-go:
// the SDK's signed requests must pass the simulator's own verifier, and the
// simulator's answers, certificates and notifications must pass the SDK's
// validator, downloader and notify handler.

// wechatPayTestNote is a notification the receiver got.
type wechatPayTestNote struct {
	header http.Header
	body   []byte
}

type wechatPayTestEnv struct {
	sim   *Sandbox
	base  string // the simulator's /sandbox URL
	app   *App
	cfg   *config.App
	notes chan wechatPayTestNote
	// expires is every order's time_expire, so prepays can be repeated.
	expires time.Time
}

// wechatPayTestSetup runs a simulator with one WeChat app in key mode mode,
// and a receiver for its notifications.
func wechatPayTestSetup(t *testing.T, mode string, opts Options) *wechatPayTestEnv {
	t.Helper()
	e := &wechatPayTestEnv{notes: make(chan wechatPayTestNote, 64), expires: time.Now().Add(time.Hour).Truncate(time.Second)}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.notes <- wechatPayTestNote{header: r.Header.Clone(), body: body}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e.sim = New(opts)
	e.base = serveTest(t, e.sim)
	var err error
	e.app, e.cfg, err = NewAppPair(AppSpec{
		ID: "wxp-" + randomHex(4), Platform: WeChat, PublicURL: recv.URL, Pay: true,
		WeChatPayKeyMode: mode, Key: testKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.sim.AddApp(e.app)
	return e
}

func (e *wechatPayTestEnv) notifyURL() string { return e.app.CallbackURL + "/payments" }

// wechatPayRewrite sends requests for the real WeChat Pay host to the
// simulator, optionally changing them after the SDK signed them.
type wechatPayRewrite struct {
	base   *url.URL
	mutate func(*http.Request)
}

func (rw wechatPayRewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host, out.Host = rw.base.Scheme, rw.base.Host, rw.base.Host
	out.URL.Path = rw.base.Path + "/wechatpay" + req.URL.Path
	out.URL.RawPath = ""
	if rw.mutate != nil {
		rw.mutate(out)
	}
	return http.DefaultTransport.RoundTrip(out)
}

func (e *wechatPayTestEnv) httpClient(t *testing.T, mutate func(*http.Request)) *http.Client {
	t.Helper()
	u, err := url.Parse(e.base)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: wechatPayRewrite{base: u, mutate: mutate}}
}

// verifier builds the SDK verifier for the merchant's key mode; in
// certificate modes the certificates come from the simulator through the
// SDK's downloader.
func (e *wechatPayTestEnv) verifier(t *testing.T) auth.Verifier {
	t.Helper()
	pay := e.cfg.Pay
	if e.app.WeChatPay.PlatformCert == nil {
		return verifiers.NewSHA256WithRSAPubkeyVerifier(pay.PublicKeyID, *pay.PublicKey)
	}
	dl, err := core.NewClient(context.Background(),
		option.WithMerchantCredential(pay.MchID, pay.SerialNo, pay.PrivateKey),
		option.WithoutValidator(), option.WithHTTPClient(e.httpClient(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := downloader.NewCertificateDownloaderWithClient(context.Background(), dl, pay.APIv3Key)
	if err != nil {
		t.Fatalf("SDK downloader against the simulator: %v", err)
	}
	if _, ok := d.Get(context.Background(), e.app.WeChatPay.PlatformSerial); !ok {
		t.Fatalf("downloaded certificates %v lack serial %s", d.GetAll(context.Background()), e.app.WeChatPay.PlatformSerial)
	}
	if pay.PublicKey != nil {
		return verifiers.NewSHA256WithRSACombinedVerifier(d, pay.PublicKeyID, *pay.PublicKey)
	}
	return verifiers.NewSHA256WithRSAVerifier(d)
}

// client is an SDK client for the merchant: it signs with the merchant key
// and validates answers with v.
func (e *wechatPayTestEnv) client(t *testing.T, key *rsa.PrivateKey, v auth.Verifier, mutate func(*http.Request)) *core.Client {
	t.Helper()
	c, err := core.NewClient(context.Background(),
		option.WithMerchantCredential(e.cfg.Pay.MchID, e.cfg.Pay.SerialNo, key),
		option.WithVerifier(v), option.WithHTTPClient(e.httpClient(t, mutate)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *wechatPayTestEnv) prepayRequest(outTradeNo string, total int64) jsapi.PrepayRequest {
	return jsapi.PrepayRequest{
		Appid: core.String(e.app.AppID), Mchid: core.String(e.cfg.Pay.MchID),
		Description: core.String("测试商品"), OutTradeNo: core.String(outTradeNo),
		NotifyUrl: core.String(e.notifyURL()), Attach: core.String("a1"),
		TimeExpire: core.Time(e.expires),
		Amount:     &jsapi.Amount{Total: core.Int64(total), Currency: core.String("CNY")},
		Payer:      &jsapi.Payer{Openid: core.String(e.sim.User(e.app, "alice").OpenID)},
	}
}

func (e *wechatPayTestEnv) note(t *testing.T) wechatPayTestNote {
	t.Helper()
	select {
	case n := <-e.notes:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return wechatPayTestNote{}
	}
}

// parseNote opens a notification with the SDK's notify handler.
func (e *wechatPayTestEnv) parseNote(t *testing.T, v auth.Verifier, n wechatPayTestNote, content any) (*notify.Request, error) {
	t.Helper()
	h, err := notify.NewRSANotifyHandler(e.cfg.Pay.APIv3Key, v)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/payments", bytes.NewReader(n.body))
	req.Header = n.header.Clone()
	return h.ParseNotifyRequest(context.Background(), req, content)
}

func wechatPayAPIError(t *testing.T, err error) *core.APIError {
	t.Helper()
	var ae *core.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want a WeChat Pay error answer, got %v", err)
	}
	return ae
}

func TestWeChatPaySDKRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode, signWith string
	}{
		{KeyModePublicKey, ""},
		{KeyModeCertificate, ""},
		{KeyModeBoth, "public_key"},
		{KeyModeBoth, "certificate"},
	} {
		t.Run(tc.mode+"/"+tc.signWith, func(t *testing.T) {
			t.Parallel()
			e := wechatPayTestSetup(t, tc.mode, Options{})
			if tc.signWith != "" {
				e.app.WeChatPay.SignWith = tc.signWith
			}
			v := e.verifier(t)
			c := e.client(t, e.cfg.Pay.PrivateKey, v, nil)
			ctx := context.Background()
			svc := jsapi.JsapiApiService{Client: c}
			no := "T" + randomHex(8)

			pre, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100))
			if err != nil {
				t.Fatalf("prepay: %v", err)
			}
			again, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100))
			if err != nil || *again.PrepayId != *pre.PrepayId {
				t.Fatalf("same prepay again: %v, %v, want prepay_id %s", again, err, *pre.PrepayId)
			}
			q, _, err := svc.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID})
			if err != nil || *q.TradeState != "NOTPAY" {
				t.Fatalf("query before paying: %v, %v", q, err)
			}

			rep, err := e.sim.Pay(ctx, e.app, no, Faults{})
			if err != nil || len(rep.Deliveries) != 1 || rep.Deliveries[0].Status != http.StatusNoContent {
				t.Fatalf("pay: %+v, %v", rep, err)
			}
			n := e.note(t)
			wantSerial := e.app.WeChatPay.PublicKeyID
			if tc.signWith == "certificate" || tc.mode == KeyModeCertificate {
				wantSerial = e.app.WeChatPay.PlatformSerial
			}
			if got := n.header.Get("Wechatpay-Serial"); got != wantSerial {
				t.Errorf("notification serial %s, want %s", got, wantSerial)
			}
			var tx payments.Transaction
			nr, err := e.parseNote(t, v, n, &tx)
			if err != nil {
				t.Fatalf("SDK notify handler rejects the simulator's notification: %v", err)
			}
			if nr.EventType != "TRANSACTION.SUCCESS" || nr.ID != rep.Details["notification_id"] || nr.Resource.AssociatedData != "transaction" {
				t.Errorf("notification %+v", nr)
			}
			if *tx.OutTradeNo != no || *tx.TradeState != "SUCCESS" || *tx.Amount.Total != 100 || *tx.Mchid != e.cfg.Pay.MchID ||
				*tx.Appid != e.app.AppID || *tx.Payer.Openid != e.sim.User(e.app, "alice").OpenID || *tx.Attach != "a1" {
				t.Errorf("transaction %s", tx)
			}
			q, _, err = svc.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID})
			if err != nil || *q.TradeState != "SUCCESS" || *q.TransactionId != *tx.TransactionId {
				t.Fatalf("query after paying: %v, %v", q, err)
			}

			refunds := refunddomestic.RefundsApiService{Client: c}
			r, _, err := refunds.Create(ctx, refunddomestic.CreateRequest{
				OutTradeNo: &no, OutRefundNo: core.String("R" + no), NotifyUrl: core.String(e.notifyURL()),
				Amount: &refunddomestic.AmountReq{Refund: core.Int64(30), Total: core.Int64(100), Currency: core.String("CNY")},
			})
			if err != nil || *r.Status != refunddomestic.STATUS_PROCESSING || *r.Amount.Refund != 30 {
				t.Fatalf("refund: %v, %v", r, err)
			}
			var notice map[string]any
			if nr, err = e.parseNote(t, v, e.note(t), &notice); err != nil {
				t.Fatalf("SDK notify handler rejects the refund notification: %v", err)
			}
			if nr.EventType != "REFUND.SUCCESS" || notice["out_refund_no"] != "R"+no || notice["refund_status"] != "SUCCESS" {
				t.Errorf("refund notification %+v %v", nr, notice)
			}
			r, _, err = refunds.QueryByOutRefundNo(ctx, refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String("R" + no)})
			if err != nil || *r.Status != refunddomestic.STATUS_SUCCESS || r.SuccessTime == nil {
				t.Fatalf("query refund: %v, %v", r, err)
			}

			other := "C" + randomHex(8)
			if _, _, err := svc.Prepay(ctx, e.prepayRequest(other, 5)); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.CloseOrder(ctx, jsapi.CloseOrderRequest{OutTradeNo: &other, Mchid: &e.cfg.Pay.MchID}); err != nil {
				t.Fatalf("close (an empty 204 must verify too): %v", err)
			}
			q, _, err = svc.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: &other, Mchid: &e.cfg.Pay.MchID})
			if err != nil || *q.TradeState != "CLOSED" {
				t.Fatalf("query closed: %v, %v", q, err)
			}
		})
	}
}

func TestWeChatPayRejectsBadRequestSignatures(t *testing.T) {
	t.Parallel()
	e := wechatPayTestSetup(t, KeyModePublicKey, Options{})
	skewed := wechatPayTestSetup(t, KeyModePublicKey, Options{Now: func() time.Time { return time.Now().Add(6 * time.Minute) }})
	other, _ := testKey()
	for other.Equal(e.cfg.Pay.PrivateKey) {
		other, _ = testKey()
	}
	for _, tc := range []struct {
		name   string
		env    *wechatPayTestEnv
		key    *rsa.PrivateKey
		serial string
		mutate func(*http.Request)
		want   int
	}{
		{name: "valid", env: e, want: http.StatusOK},
		{name: "tampered body", env: e, want: http.StatusUnauthorized, mutate: func(r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			b = bytes.Replace(b, []byte(`"total":100`), []byte(`"total":1`), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}},
		{name: "tampered query", env: e, want: http.StatusUnauthorized, mutate: func(r *http.Request) { r.URL.RawQuery = "x=1" }},
		{name: "another key", env: e, key: other, want: http.StatusUnauthorized},
		{name: "another serial", env: e, serial: "0123456789ABCDEF", want: http.StatusUnauthorized},
		{name: "timestamp 6 minutes off", env: skewed, want: http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env
			key := tc.key
			if key == nil {
				key = env.cfg.Pay.PrivateKey
			}
			serial := env.cfg.Pay.SerialNo
			if tc.serial != "" {
				serial = tc.serial
			}
			c, err := core.NewClient(context.Background(),
				option.WithMerchantCredential(env.cfg.Pay.MchID, serial, key),
				option.WithVerifier(env.verifier(t)), option.WithHTTPClient(env.httpClient(t, tc.mutate)))
			if err != nil {
				t.Fatal(err)
			}
			svc := jsapi.JsapiApiService{Client: c}
			_, _, err = svc.Prepay(context.Background(), env.prepayRequest("S"+randomHex(8), 100))
			if tc.want == http.StatusOK {
				if err != nil {
					t.Fatalf("valid request refused: %v", err)
				}
				return
			}
			ae := wechatPayAPIError(t, err)
			if ae.StatusCode != tc.want || ae.Code != "SIGN_ERROR" {
				t.Fatalf("got %d %s, want %d SIGN_ERROR", ae.StatusCode, ae.Code, tc.want)
			}
		})
	}
}

func TestWeChatPayNotificationFaults(t *testing.T) {
	t.Parallel()
	e := wechatPayTestSetup(t, KeyModePublicKey, Options{})
	v := e.verifier(t)
	svc := jsapi.JsapiApiService{Client: e.client(t, e.cfg.Pay.PrivateKey, v, nil)}
	amount := int64(1)
	for _, tc := range []struct {
		name    string
		faults  Faults
		copies  int
		wantErr string // substring of the SDK's error; "" = accepted
		check   func(t *testing.T, tx *payments.Transaction)
	}{
		{name: "clean", copies: 1},
		{name: "duplicates", faults: Faults{Duplicates: 3}, copies: 4},
		{name: "dropped", faults: Faults{Drop: true}, copies: 0},
		{name: "bad signature", faults: Faults{BadSignature: true}, copies: 1, wantErr: "verify"},
		{name: "stale timestamp", faults: Faults{StaleTimestamp: true}, copies: 1, wantErr: "expires"},
		{name: "tampered ciphertext", faults: Faults{TamperCiphertext: true}, copies: 1, wantErr: "decrypt"},
		{name: "truncated", faults: Faults{Truncate: true}, copies: 1, wantErr: "verify"},
		{name: "amount", faults: Faults{Amount: &amount}, copies: 1, check: func(t *testing.T, tx *payments.Transaction) {
			if *tx.Amount.Total != 1 {
				t.Errorf("amount %d, want the overridden 1", *tx.Amount.Total)
			}
		}},
		{name: "foreign merchant", faults: Faults{ForeignMerchant: true}, copies: 1, check: func(t *testing.T, tx *payments.Transaction) {
			if *tx.Mchid == e.cfg.Pay.MchID {
				t.Errorf("mchid %s is still ours", *tx.Mchid)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share one receiver.
			no := "F" + randomHex(8)
			if _, _, err := svc.Prepay(context.Background(), e.prepayRequest(no, 100)); err != nil {
				t.Fatal(err)
			}
			rep, err := e.sim.Pay(context.Background(), e.app, no, tc.faults)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Deliveries) != tc.copies || rep.Dropped != (tc.copies == 0) {
				t.Fatalf("report %+v, want %d deliveries", rep, tc.copies)
			}
			ids := map[string]bool{}
			for range tc.copies {
				var tx payments.Transaction
				nr, err := e.parseNote(t, v, e.note(t), &tx)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("SDK accepted a faulty notification or failed otherwise: %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("SDK rejects: %v", err)
				}
				ids[nr.ID] = true
				if *tx.OutTradeNo != no {
					t.Errorf("out_trade_no %s", *tx.OutTradeNo)
				}
				if tc.check != nil {
					tc.check(t, &tx)
				}
			}
			if tc.wantErr == "" && tc.copies > 0 && len(ids) != 1 {
				t.Errorf("copies carry ids %v, want one id", ids)
			}
			select {
			case n := <-e.notes:
				t.Fatalf("unexpected extra notification %s", n.body)
			default:
			}
		})
	}
}

func TestWeChatPayLedgerRules(t *testing.T) {
	t.Parallel()
	e := wechatPayTestSetup(t, KeyModePublicKey, Options{})
	v := e.verifier(t)
	c := e.client(t, e.cfg.Pay.PrivateKey, v, nil)
	ctx := context.Background()
	svc := jsapi.JsapiApiService{Client: c}
	refunds := refunddomestic.RefundsApiService{Client: c}

	t.Run("prepay parameters", func(t *testing.T) {
		used := "U" + randomHex(8)
		if _, _, err := svc.Prepay(ctx, e.prepayRequest(used, 100)); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			edit   func(*jsapi.PrepayRequest)
			status int
			code   string
		}{
			{"32 characters with _-*", func(r *jsapi.PrepayRequest) {
				r.OutTradeNo = core.String("a_b-c*" + strings.Repeat("9", 20) + randomHex(3))
			}, 200, ""},
			{"out_trade_no of 5", func(r *jsapi.PrepayRequest) { r.OutTradeNo = core.String("abc12") }, 400, "PARAM_ERROR"},
			{"out_trade_no of 33", func(r *jsapi.PrepayRequest) { r.OutTradeNo = core.String(strings.Repeat("a", 33)) }, 400, "PARAM_ERROR"},
			{"out_trade_no with a space", func(r *jsapi.PrepayRequest) { r.OutTradeNo = core.String("abc 1234") }, 400, "PARAM_ERROR"},
			{"description of 128", func(r *jsapi.PrepayRequest) { r.Description = core.String(strings.Repeat("商", 128)) }, 400, "PARAM_ERROR"},
			{"zero amount", func(r *jsapi.PrepayRequest) { r.Amount.Total = core.Int64(0) }, 400, "PARAM_ERROR"},
			{"another appid", func(r *jsapi.PrepayRequest) { r.Appid = core.String("wx0000000000000000") }, 400, "APPID_MCHID_NOT_MATCH"},
			{"notify_url with a query", func(r *jsapi.PrepayRequest) { r.NotifyUrl = core.String(e.notifyURL() + "?a=1") }, 400, "PARAM_ERROR"},
			{"used out_trade_no, other amount", func(r *jsapi.PrepayRequest) { r.OutTradeNo, r.Amount.Total = &used, core.Int64(99) }, 403, "OUT_TRADE_NO_USED"},
		} {
			req := e.prepayRequest("P"+randomHex(8), 100)
			tc.edit(&req)
			_, _, err := svc.Prepay(ctx, req)
			if tc.status == 200 {
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
				}
				continue
			}
			if ae := wechatPayAPIError(t, err); ae.StatusCode != tc.status || ae.Code != tc.code {
				t.Errorf("%s: got %d %s, want %d %s", tc.name, ae.StatusCode, ae.Code, tc.status, tc.code)
			}
		}
	})

	t.Run("closed orders cannot be paid or prepaid", func(t *testing.T) {
		no := "X" + randomHex(8)
		if _, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100)); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.CloseOrder(ctx, jsapi.CloseOrderRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.CloseOrder(ctx, jsapi.CloseOrderRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID}); err != nil {
			t.Fatalf("closing twice: %v", err)
		}
		if _, err := e.sim.Pay(ctx, e.app, no, Faults{}); err == nil {
			t.Fatal("paid a closed order")
		}
		_, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100))
		if ae := wechatPayAPIError(t, err); ae.Code != "ORDER_CLOSED" {
			t.Fatalf("prepay closed: %s", ae.Code)
		}
	})

	t.Run("paying twice charges once", func(t *testing.T) {
		no := "D" + randomHex(8)
		if _, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100)); err != nil {
			t.Fatal(err)
		}
		first, err := e.sim.Pay(ctx, e.app, no, Faults{})
		if err != nil {
			t.Fatal(err)
		}
		second, err := e.sim.Pay(ctx, e.app, no, Faults{})
		if err != nil {
			t.Fatal(err)
		}
		e.note(t)
		e.note(t)
		if first.Details["transaction_id"] != second.Details["transaction_id"] || first.Details["notification_id"] != second.Details["notification_id"] {
			t.Fatalf("second payment %v differs from first %v", second.Details, first.Details)
		}
		_, err = svc.CloseOrder(ctx, jsapi.CloseOrderRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID})
		if ae := wechatPayAPIError(t, err); ae.Code != "ORDERPAID" {
			t.Fatalf("close paid: %s", ae.Code)
		}
		// The whole amount can be refunded once, not more.
		refund := func(outRefundNo string, amount int64) (*refunddomestic.Refund, error) {
			r, _, err := refunds.Create(ctx, refunddomestic.CreateRequest{
				OutTradeNo: &no, OutRefundNo: &outRefundNo,
				Amount: &refunddomestic.AmountReq{Refund: &amount, Total: core.Int64(100), Currency: core.String("CNY")},
			})
			return r, err
		}
		r1, err := refund("R1"+no, 60)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := refund("R1"+no, 60); err != nil || *again.RefundId != *r1.RefundId {
			t.Fatalf("same out_refund_no again: %v, %v", again, err)
		}
		_, err = refund("R2"+no, 41)
		if ae := wechatPayAPIError(t, err); ae.StatusCode != http.StatusForbidden || ae.Code != "NOT_ENOUGH" {
			t.Fatalf("refund beyond the paid amount: %d %s", ae.StatusCode, ae.Code)
		}
		if _, err := refund("R3"+no, 40); err != nil {
			t.Fatalf("refunding the rest: %v", err)
		}
		_, err = refund("R1"+no, 10)
		if ae := wechatPayAPIError(t, err); ae.Code != "INVALID_REQUEST" {
			t.Fatalf("reused out_refund_no with another amount: %s", ae.Code)
		}
	})

	t.Run("unknown objects and unpaid refunds", func(t *testing.T) {
		_, _, err := svc.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: core.String("nope" + randomHex(4)), Mchid: &e.cfg.Pay.MchID})
		if ae := wechatPayAPIError(t, err); ae.StatusCode != http.StatusNotFound || ae.Code != "ORDER_NOT_EXIST" {
			t.Fatalf("query unknown: %d %s", ae.StatusCode, ae.Code)
		}
		_, _, err = refunds.QueryByOutRefundNo(ctx, refunddomestic.QueryByOutRefundNoRequest{OutRefundNo: core.String("nope")})
		if ae := wechatPayAPIError(t, err); ae.Code != "RESOURCE_NOT_EXISTS" {
			t.Fatalf("query unknown refund: %s", ae.Code)
		}
		no := "N" + randomHex(8)
		if _, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100)); err != nil {
			t.Fatal(err)
		}
		_, _, err = refunds.Create(ctx, refunddomestic.CreateRequest{
			OutTradeNo: &no, OutRefundNo: core.String("R" + no),
			Amount: &refunddomestic.AmountReq{Refund: core.Int64(1), Total: core.Int64(100), Currency: core.String("CNY")},
		})
		if ae := wechatPayAPIError(t, err); ae.Code != "INVALID_REQUEST" {
			t.Fatalf("refund unpaid: %s", ae.Code)
		}
	})

	t.Run("injected failures", func(t *testing.T) {
		e.sim.FailWeChatPay(e.cfg.Pay.MchID, WeChatPayError{API: "query_order", Status: 500, Code: "SYSTEM_ERROR", Message: "系统繁忙", Times: 2})
		no := "I" + randomHex(8)
		if _, _, err := svc.Prepay(ctx, e.prepayRequest(no, 100)); err != nil {
			t.Fatalf("prepay is not the injected API: %v", err)
		}
		for range 2 {
			_, _, err := svc.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID})
			if ae := wechatPayAPIError(t, err); ae.StatusCode != 500 || ae.Code != "SYSTEM_ERROR" {
				t.Fatalf("injected: %d %s", ae.StatusCode, ae.Code)
			}
		}
		if _, _, err := svc.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID}); err != nil {
			t.Fatalf("after the injected failures: %v", err)
		}
	})
}

// TestWeChatPayRefundNoticeBeforePaidNotice drives the control routes: the
// payment notification is lost, the refund notification arrives, then the
// platform's retry of the payment notification.
func TestWeChatPayRefundNoticeBeforePaidNotice(t *testing.T) {
	t.Parallel()
	e := wechatPayTestSetup(t, KeyModeCertificate, Options{})
	v := e.verifier(t)
	svc := jsapi.JsapiApiService{Client: e.client(t, e.cfg.Pay.PrivateKey, v, nil)}
	no := "O" + randomHex(8)
	if _, _, err := svc.Prepay(context.Background(), e.prepayRequest(no, 100)); err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) Report {
		t.Helper()
		resp, err := http.Post(e.base+"/apps/"+e.app.ID+"/orders/"+no+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
		}
		var rep Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	lost := post("/pay", `{"faults":{"drop":true}}`)
	if !lost.Dropped {
		t.Fatalf("pay with drop: %+v", lost)
	}
	refunded := post("/refund-notify", `{"amount":40}`)
	var notice map[string]any
	nr, err := e.parseNote(t, v, e.note(t), &notice)
	if err != nil || nr.EventType != "REFUND.SUCCESS" || notice["out_trade_no"] != no || notice["amount"].(map[string]any)["refund"] != float64(40) {
		t.Fatalf("first notification: %+v %v %v", nr, notice, err)
	}
	if refunded.Details["out_refund_no"] != notice["out_refund_no"] {
		t.Errorf("report %v does not name refund %v", refunded.Details, notice["out_refund_no"])
	}
	retried := post("/pay", "")
	var tx payments.Transaction
	nr, err = e.parseNote(t, v, e.note(t), &tx)
	if err != nil || nr.EventType != "TRANSACTION.SUCCESS" || *tx.TradeState != "SUCCESS" {
		t.Fatalf("second notification: %+v %v", nr, err)
	}
	if nr.ID != lost.Details["notification_id"] || retried.Details["notification_id"] != nr.ID {
		t.Errorf("the retried payment notification has id %s, the lost one %v", nr.ID, lost.Details["notification_id"])
	}
	q, _, err := svc.QueryOrderByOutTradeNo(context.Background(), jsapi.QueryOrderByOutTradeNoRequest{OutTradeNo: &no, Mchid: &e.cfg.Pay.MchID})
	if err != nil || *q.TradeState != "REFUND" {
		t.Fatalf("query after the refund: %v %v", q, err)
	}
	if _, err := e.sim.WeChatPayRefundNotify(context.Background(), e.app, no, WeChatPayRefundNotifyRequest{Amount: 61}); err == nil {
		t.Fatal("refunded more than what is left")
	}
}

func TestWeChatPayUnknownMerchant(t *testing.T) {
	t.Parallel()
	e := wechatPayTestSetup(t, KeyModePublicKey, Options{})
	req, err := http.NewRequest(http.MethodGet, e.base+"/wechatpay/v3/pay/transactions/out-trade-no/abcdef?mchid=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", fmt.Sprintf(`%s mchid="1",nonce_str="n",timestamp="%d",serial_no="s",signature="c2ln"`, wechatPayAuthScheme, time.Now().Unix()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusBadRequest || body.Code != "MCH_NOT_EXISTS" {
		t.Fatalf("got %d %s", resp.StatusCode, body.Code)
	}
}
