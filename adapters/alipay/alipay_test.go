package alipay_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/sessions"
	"github.com/minigate/minigate/webhooks"
)

// capture is an HTTP receiver standing in for minigate's callback routes:
// it records what the simulator delivers and answers "success".
type capture struct {
	URL string
	ch  chan webhooks.Request
}

func newCapture(t *testing.T) *capture {
	t.Helper()
	c := &capture{ch: make(chan webhooks.Request, 64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.ch <- webhooks.Request{Method: r.Method, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body, ReceivedAt: time.Now()}
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

// next waits for the next delivery.
func (c *capture) next(t *testing.T) webhooks.Request {
	t.Helper()
	select {
	case r := <-c.ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
		return webhooks.Request{}
	}
}

// env is one Alipay app registered with the shared simulator, and
// minigate's adapters for it.
type env struct {
	sim      *sandbox.Sandbox
	sbApp    *sandbox.App
	cfg      *config.App
	opts     adapters.Options
	client   *alipay.Client
	pay      *alipay.Pay
	messages webhooks.MessageVerifier
	rcv      *capture
}

func setup(t *testing.T, withAES bool) *env {
	t.Helper()
	return setupMode(t, withAES, false)
}

// setupMode is setup with the app in public-key certificate mode when
// certMode is set.
func setupMode(t *testing.T, withAES, certMode bool) *env {
	t.Helper()
	sim, simURL := testenv.Simulator(t)
	e := &env{sim: sim, rcv: newCapture(t)}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	var err error
	e.sbApp, e.cfg, err = sandbox.NewAppPair(sandbox.AppSpec{
		ID: "ali-" + hex.EncodeToString(id), Platform: sandbox.Alipay, Pay: true, Key: testenv.Key, PublicURL: e.rcv.URL,
		AlipayCertMode: certMode,
	})
	if err != nil {
		t.Fatal(err)
	}
	if withAES {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		e.sbApp.Messages.AESKey = base64.StdEncoding.EncodeToString(k)
		e.cfg.Messages.AESKey = e.sbApp.Messages.AESKey
	}
	sim.AddApp(e.sbApp)
	e.opts = adapters.Options{Endpoints: sandbox.Endpoints(simURL), Timeout: 5 * time.Second, CallbackWindow: 5 * time.Minute}
	if e.client, err = alipay.New(e.cfg, e.opts); err != nil {
		t.Fatal(err)
	}
	if e.pay, err = alipay.NewPay(e.cfg, e.opts); err != nil {
		t.Fatal(err)
	}
	if e.messages, err = alipay.NewMessageVerifier(e.cfg, e.opts); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) notifyURL() string { return e.rcv.URL + "/callbacks/" + e.cfg.ID + "/payments" }

// prepay creates an order of amount fen for simulated user name.
func (e *env) prepay(t *testing.T, outTradeNo string, amount int64, name string) orders.Prepay {
	t.Helper()
	u := e.sim.User(e.sbApp, name)
	pre, err := e.pay.Prepay(context.Background(), orders.PrepayRequest{
		OutTradeNo: outTradeNo, Description: "minigate test order", Amount: amount,
		Payer: orders.Payer{OpenID: u.AlipayOpenID, AlipayUserID: u.AlipayUserID}, NotifyURL: e.notifyURL(),
		ExpiresAt: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatalf("prepay %s: %v", outTradeNo, err)
	}
	return pre
}

// reason returns err's PlatformError reason, failing when err is not one.
func reason(t *testing.T, err error) adapters.Reason {
	t.Helper()
	pe, ok := adapters.AsPlatformError(err)
	if !ok {
		t.Fatalf("want a *adapters.PlatformError, got %T %v", err, err)
	}
	if pe.Platform != alipay.Platform || pe.API == "" {
		t.Fatalf("PlatformError without platform/api: %+v", pe)
	}
	return pe.Reason
}

// rejected returns err's VerifyError reason, failing when err is not one.
func rejected(t *testing.T, err error) webhooks.RejectReason {
	t.Helper()
	ve, ok := webhooks.AsVerifyError(err)
	if !ok {
		t.Fatalf("want a *webhooks.VerifyError, got %T %v", err, err)
	}
	return ve.Reason
}

// signForm signs v as Alipay signs notifications: sorted non-empty
// parameters minus those excluded, RSA-SHA256. Written here independently
// of the adapter, the SDK and the simulator.
func signForm(t testing.TB, key *rsa.PrivateKey, v url.Values, exclude ...string) {
	t.Helper()
	h := sha256.Sum256([]byte(signContent(v, exclude...)))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	v.Set("sign", base64.StdEncoding.EncodeToString(sig))
}

// verifyForm checks v's sign with pub the same way.
func verifyForm(pub *rsa.PublicKey, v url.Values, exclude ...string) error {
	sig, err := base64.StdEncoding.DecodeString(v.Get("sign"))
	if err != nil {
		return err
	}
	h := sha256.Sum256([]byte(signContent(v, exclude...)))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig)
}

func signContent(v url.Values, exclude ...string) string {
	var pairs []string
	for k := range v {
		skip := v.Get(k) == ""
		for _, x := range exclude {
			skip = skip || k == x
		}
		if !skip {
			pairs = append(pairs, k+"="+v.Get(k))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

func TestCode2Session(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	ctx := context.Background()
	code, err := e.sim.MintCode(e.cfg.ID, "alice", "login")
	if err != nil {
		t.Fatal(err)
	}
	login, err := e.client.Code2Session(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	u := e.sim.User(e.sbApp, "alice")
	if login != (sessions.Login{OpenID: u.AlipayOpenID, AlipayUserID: u.AlipayUserID}) {
		t.Fatalf("login = %+v, want open_id %s user_id %s", login, u.AlipayOpenID, u.AlipayUserID)
	}
	for name, c := range map[string]string{"reused": code, "unknown": "not-a-code", "empty": ""} {
		if _, err := e.client.Code2Session(ctx, c); reason(t, err) != adapters.ReasonInvalidCode {
			t.Fatalf("%s code: %v, want invalid_code", name, err)
		}
	}
	var ue *adapters.UnsupportedError
	if _, err := e.client.PhoneNumber(ctx, "any"); !errors.As(err, &ue) || ue.Platform != alipay.Platform {
		t.Fatalf("PhoneNumber: %v, want UnsupportedError", err)
	}
}

func TestCode2SessionWithAppKeyAlipayDoesNotKnow(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	other := *e.cfg
	k, _ := testenv.Key()
	for k.Equal(e.cfg.PrivateKey) {
		k, _ = testenv.Key()
	}
	other.PrivateKey = k
	c, err := alipay.New(&other, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := e.sim.MintCode(e.cfg.ID, "alice", "login")
	_, err = c.Code2Session(context.Background(), code)
	if reason(t, err) != adapters.ReasonAuth {
		t.Fatalf("login signed with an unknown key: %v, want platform_auth", err)
	}
	if pe, _ := adapters.AsPlatformError(err); pe.SubCode != "isv.invalid-signature" || len(pe.Message) > 260 {
		t.Fatalf("error %+v", pe)
	}
}

func TestConstructorsNeedKeys(t *testing.T) {
	t.Parallel()
	k, _ := testenv.Key()
	cases := map[string]*config.App{
		"nil app":            nil,
		"no app id":          {ID: "a", PrivateKey: k, AlipayPublicKey: &k.PublicKey},
		"no private key":     {ID: "a", AppID: "2021000000000001", AlipayPublicKey: &k.PublicKey},
		"no Alipay key":      {ID: "a", AppID: "2021000000000001", PrivateKey: k},
		"AES key not base64": {ID: "a", AppID: "2021000000000001", PrivateKey: k, AlipayPublicKey: &k.PublicKey, Messages: config.Messages{AESKey: "%%%"}},
	}
	for name, app := range cases {
		if _, err := alipay.New(app, adapters.Options{}); err == nil {
			t.Errorf("New with %s succeeded", name)
		}
		if _, err := alipay.NewPay(app, adapters.Options{}); err == nil {
			t.Errorf("NewPay with %s succeeded", name)
		}
		if _, err := alipay.NewMessageVerifier(app, adapters.Options{}); err == nil {
			t.Errorf("NewMessageVerifier with %s succeeded", name)
		}
	}
}
