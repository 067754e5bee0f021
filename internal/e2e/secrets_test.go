package e2e

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// captured is one piece of text minigate produced: a response body (with
// its headers), a log line, a reply to a platform, an event body.
type captured struct {
	what string
	text string
}

// recorder keeps everything minigate says during a run.
type recorder struct {
	mu  sync.Mutex
	out []captured
}

func (r *recorder) add(what, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out = append(r.out, captured{what, text})
}

// do sends a request through e and keeps the response.
func (r *recorder) do(e *testenv.Env, method, path string, body any, opts ...testenv.Opt) *testenv.Response {
	e.T.Helper()
	resp := e.Do(method, path, body, opts...)
	var h strings.Builder
	for k, vs := range resp.Header {
		fmt.Fprintf(&h, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	r.add(fmt.Sprintf("response to %s %s (%d)", method, path, resp.Status), h.String()+"\n"+string(resp.Body))
	return resp
}

// report returns a function that keeps minigate's answers to a callback
// the simulator sent: rec.report("push")(sb.Push(…)).
func (r *recorder) report(what string) func(*sandbox.Report, error) {
	return func(rep *sandbox.Report, err error) {
		if err != nil {
			r.add(what+": error", err.Error())
			return
		}
		for _, d := range rep.Deliveries {
			r.add(what+": reply to the platform", d.Body)
		}
	}
}

// secret is a value that must never appear, with where it may.
type secret struct {
	name  string
	value string
	// allowed says whether a captured text may contain it (a session
	// token in the response that issued it).
	allowed func(c captured) bool
}

// keyForms are the ways a private key could leak: PKCS#8 and PKCS#1 DER in
// base64, unwrapped or as PEM lines. A 48-character window aligned on a
// PEM line is found in either form.
func keyForms(name string, k *rsa.PrivateKey) []secret {
	var out []secret
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	for form, der := range map[string][]byte{"PKCS#8": pkcs8, "PKCS#1": x509.MarshalPKCS1PrivateKey(k)} {
		b64 := base64.StdEncoding.EncodeToString(der)
		out = append(out, secret{name: name + " (" + form + ")", value: b64[128 : 128+48]})
		pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if !strings.Contains(pemText, b64[128:128+48]) {
			panic("keyForms: window not on one PEM line")
		}
	}
	return out
}

// TestNoSecretsInResponsesOrLogs runs the suites' flows — logins, phone
// numbers, decryption, message pushes (good and forged), orders, payment
// notifications, refunds, syncs, closes, events, platform failures — on
// every platform, keeps every response body and header, every reply to a
// platform, every event body and every log line (debug level), and looks
// for every secret the instance holds: app secrets, session keys, access
// tokens, API v3 keys, QQ wallet keys, merchant and Alipay private keys,
// message tokens and EncodingAESKeys, the API key, the events secret,
// secret_key, and session tokens outside the response that issued them.
func TestNoSecretsInResponsesOrLogs(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	backend := newEventReceiver(t)
	e := testenv.Start(t, testenv.Spec{Apps: shops, Events: backend.config()})
	sb := e.Sandbox
	ctx := context.Background()
	op := testenv.Operator()

	var tokens []secret // session tokens and session keys, as issued
	for _, spec := range shops {
		a, sa := e.App(spec.ID), e.SandboxApp(spec.ID)
		// Log in twice (the second login replaces the session key) and
		// use the session.
		var token string
		for i := range 2 {
			r := rec.do(e, http.MethodPost, "/v1/apps/"+a.ID+"/sessions", map[string]any{"code": e.MintCode(spec.ID, "alice"), "prefer_unionid": i == 1})
			if r.Status != http.StatusCreated {
				t.Fatalf("%s login: %d %s", spec.ID, r.Status, r.Body)
			}
			var out struct {
				Token string `json:"token"`
			}
			r.Decode(t, &out)
			token = out.Token
			issued := fmt.Sprintf("response to POST /v1/apps/%s/sessions (201)", a.ID)
			body := string(r.Body)
			tokens = append(tokens, secret{name: spec.ID + " session token", value: token, allowed: func(c captured) bool {
				return c.what == issued && strings.Contains(c.text, body)
			}})
			if k := sb.SessionKey(a.ID, "alice"); k != "" {
				tokens = append(tokens, secret{name: spec.ID + " session key", value: k})
			}
		}
		user := testenv.Bearer(token)
		rec.do(e, http.MethodGet, "/v1/me", nil, user)
		if code, err := sb.MintCode(a.ID, "alice", "phone"); err == nil {
			rec.do(e, http.MethodPost, "/v1/me/phone", map[string]any{"code": code}, user)
		}
		if spec.Platform == sandbox.WeChat {
			data, iv, err := sb.WeChatEncryptedUserData(a.ID, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if r := rec.do(e, http.MethodPost, "/v1/me/decrypt", map[string]any{"encrypted_data": data, "iv": iv}, user); r.Status != http.StatusOK {
				t.Errorf("decrypt: %d %s", r.Status, r.Body)
			}
			rec.do(e, http.MethodPost, "/v1/me/decrypt", map[string]any{"encrypted_data": data, "iv": "AAAAAAAAAAAAAAAAAAAAAA=="}, user)
			// A platform failure, logged and answered.
			sb.FailWeChat(a.ID, sandbox.WeChatError{API: "jscode2session", ErrCode: -1, ErrMsg: "system busy"})
			rec.do(e, http.MethodPost, "/v1/apps/"+a.ID+"/sessions", map[string]any{"code": e.MintCode(spec.ID, "bob")})
		}
		rec.do(e, http.MethodPost, "/v1/apps/"+a.ID+"/sessions", map[string]any{"code": "not-a-code"})

		// Message pushes, accepted and forged.
		for _, req := range []sandbox.PushRequest{
			{Type: "text", Content: "你好"},
			{Type: "event", Event: "user_enter_tempsession", SessionFrom: "secrets"},
			{Type: "text", Content: "forged", Faults: sandbox.Faults{BadSignature: true}},
			{Type: "text", Content: "tampered", Faults: sandbox.Faults{TamperCiphertext: true}},
		} {
			rec.report(spec.ID + " push")(sb.Push(ctx, sa, "alice", req))
		}

		// Orders: paid, refunded, synced, closed; a forged notification.
		payer := payerOf(sb, sa, "alice")
		paid := createOrder(t, e.URL, testenv.APIKey, a.ID, payer, 990, "secrets-paid-"+spec.ID)
		rec.do(e, http.MethodPost, "/v1/orders/"+paid.ID+"/pay", nil, user)
		rec.report(spec.ID + " forged payment")(sb.Pay(ctx, sa, paid.OutTradeNo, sandbox.Faults{BadSignature: true}))
		rec.report(spec.ID + " payment")(sb.Pay(ctx, sa, paid.OutTradeNo, sandbox.Faults{Duplicates: 1}))
		r := rec.do(e, http.MethodPost, "/v1/orders/"+paid.ID+"/refunds", map[string]any{"amount": 90, "reason": "secrets"}, op, testenv.Header("Idempotency-Key", "refund-"+spec.ID))
		var refund struct {
			OutRefundNo string `json:"out_refund_no"`
		}
		r.Decode(t, &refund)
		if spec.Platform == sandbox.WeChat {
			rec.report(spec.ID + " refund notification")(sb.WeChatPayRefundNotify(ctx, sa, paid.OutTradeNo, sandbox.WeChatPayRefundNotifyRequest{OutRefundNo: refund.OutRefundNo}))
		}
		rec.do(e, http.MethodPost, "/v1/orders/"+paid.ID+"/sync", nil, op)
		rec.do(e, http.MethodGet, "/v1/orders/"+paid.ID, nil, op)
		rec.do(e, http.MethodGet, "/v1/orders/"+paid.ID, nil, user)
		closed := createOrder(t, e.URL, testenv.APIKey, a.ID, payer, 10, "secrets-closed-"+spec.ID)
		rec.do(e, http.MethodPost, "/v1/orders/"+closed.ID+"/close", nil, op)
		rec.do(e, http.MethodGet, "/v1/orders?app="+a.ID, nil, op)
		rec.do(e, http.MethodPost, "/v1/apps/"+a.ID+"/orders", map[string]any{"openid": payer, "amount": 10, "description": "other"}, op, testenv.Header("Idempotency-Key", "secrets-paid-"+spec.ID))
		rec.do(e, http.MethodDelete, "/v1/sessions/current", nil, user)
		rec.do(e, http.MethodGet, "/v1/me", nil, user)
	}
	backend.waitFor(t, "order.paid", len(shops), 20*time.Second)
	r := rec.do(e, http.MethodGet, "/v1/events?limit=200", nil, op)
	var page struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	r.Decode(t, &page)
	if len(page.Data) > 0 {
		rec.do(e, http.MethodGet, "/v1/events/"+page.Data[0].ID, nil, op)
		rec.do(e, http.MethodPost, "/v1/events/"+page.Data[0].ID+"/redeliver", nil, op)
	}
	rec.do(e, http.MethodGet, "/v1/rejected-callbacks", nil, op)
	rec.do(e, http.MethodGet, "/v1/orders", nil, testenv.Bearer("not-a-key"))
	rec.do(e, http.MethodGet, "/readyz", nil)
	rec.do(e, http.MethodGet, "/metrics", nil)
	time.Sleep(300 * time.Millisecond) // the redelivery and the last log lines
	for _, ev := range backend.received("") {
		rec.add("event "+ev.ID, fmt.Sprint(ev.Data))
	}
	for i, line := range strings.Split(e.Logs.String(), "\n") {
		rec.add(fmt.Sprintf("log line %d", i+1), line)
	}

	// Everything the instance must keep to itself.
	secrets := append([]secret{
		{name: "secret_key", value: e.Config.SecretKey},
		{name: "API key", value: testenv.APIKey},
		{name: "events secret", value: eventsSecret},
	}, tokens...)
	for _, spec := range shops {
		a := e.App(spec.ID)
		add := func(name, v string) {
			if v != "" {
				secrets = append(secrets, secret{name: spec.ID + " " + name, value: v})
			}
		}
		add("app secret", a.AppSecret)
		add("message token", a.Messages.Token)
		add("EncodingAESKey", a.Messages.EncodingAESKey)
		add("Alipay AES key", a.Messages.AESKey)
		if a.PrivateKey != nil {
			secrets = append(secrets, keyForms(spec.ID+" app private key", a.PrivateKey)...)
		}
		if p := a.Pay; p != nil {
			add("API v3 key", p.APIv3Key)
			add("QQ wallet API key", p.APIKey)
			if p.PrivateKey != nil {
				secrets = append(secrets, keyForms(spec.ID+" merchant private key", p.PrivateKey)...)
			}
		}
		if spec.Platform == sandbox.WeChat {
			add("access token", stableToken(t, e.SandboxURL, a.AppID, a.AppSecret))
		}
	}
	if n := len(rec.out); n < 200 {
		t.Fatalf("only %d texts captured: the run did not exercise the flows", n)
	}
	for _, s := range secrets {
		forms := []string{s.value}
		if q := url.QueryEscape(s.value); q != s.value {
			forms = append(forms, q)
		}
		for _, c := range rec.out {
			for _, f := range forms {
				if strings.Contains(c.text, f) && (s.allowed == nil || !s.allowed(c)) {
					t.Errorf("%s appears in %s:\n%.600s", s.name, c.what, c.text)
				}
			}
		}
	}
}

// stableToken asks the simulator for the app's current stable access token
// (without force_refresh the platform hands back the one minigate holds).
func stableToken(t *testing.T, simURL, appID, secret string) string {
	t.Helper()
	body := fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`, appID, secret)
	resp, err := http.Post(simURL+"/wechat/cgi-bin/stable_token", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.AccessToken == "" {
		t.Fatalf("stable token: %s (%v)", raw, err)
	}
	return out.AccessToken
}
