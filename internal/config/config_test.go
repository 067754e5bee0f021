package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeKey writes a fresh PKCS#8 private key and its PKIX public key to dir.
func writeKeys(t *testing.T, dir string) (priv, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub = filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)
	return priv, pub
}

const aesKey43 = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

func validDoc(priv, pub string) string {
	return `
listen: ":9000"
database_url: "postgres://x@localhost/db"
public_url: "https://pay.example.com/"
secret_key: "${SECRET}"
api_keys:
  - name: backend
    key: "${BACKEND_KEY}"
events:
  url: "https://backend.example.com/hooks"
  secret: "whsec_abc"
apps:
  - id: shop-wx
    platform: wechat
    app_id: "wx0123456789abcdef"
    app_secret: "${WX_SECRET}"
    union_scope: brand
    messages: { token: "tok", encoding_aes_key: "` + aesKey43 + `" }
    pay:
      mch_id: "1900000001"
      serial_no: "ABC"
      private_key_file: "` + priv + `"
      api_v3_key: "0123456789abcdef0123456789abcdef"
      public_key_id: "PUB_KEY_ID_0001"
      public_key_file: "` + pub + `"
    virtual_payment: { offer_id: "1450000001", app_key: "${XPAY_KEY}", sandbox_app_key: "sandboxkey", coin_price: 10 }
  - id: shop-qq
    platform: qq
    app_id: "1112345678"
    app_secret: "qqsecret"
    messages: { token: "t" }
    pay: { mch_id: "123", api_key: "k" }
  - id: shop-ali
    platform: alipay
    app_id: "2021000000000000"
    private_key_file: "` + priv + `"
    alipay_public_key_file: "` + pub + `"
`
}

func env(extra map[string]string) func(string) (string, bool) {
	m := map[string]string{
		"SECRET":      strings.Repeat("s", 32),
		"BACKEND_KEY": "backend-key-0123456789",
		"WX_SECRET":   "wxsecret",
		"XPAY_KEY":    "xpaykey",
	}
	for k, v := range extra {
		m[k] = v
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseValid(t *testing.T) {
	priv, pub := writeKeys(t, t.TempDir())
	cfg, err := Parse([]byte(validDoc(priv, pub)), env(map[string]string{"DATABASE_URL": "postgres://env@db/x"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "postgres://env@db/x" {
		t.Errorf("DATABASE_URL did not win: %s", cfg.DatabaseURL)
	}
	if cfg.PublicURL != "https://pay.example.com" {
		t.Errorf("public_url not trimmed: %s", cfg.PublicURL)
	}
	wx := cfg.App("shop-wx")
	if wx.AppSecret != "wxsecret" || wx.Pay.PrivateKey == nil || wx.Pay.PublicKey == nil {
		t.Errorf("wechat app not expanded/loaded: %+v", wx)
	}
	if vp := wx.VirtualPayment; vp == nil || vp.Env != VirtualPaymentProduction || vp.ActiveAppKey() != "xpaykey" || vp.CoinPrice != 10 {
		t.Errorf("virtual_payment not expanded or defaulted: %+v", vp)
	}
	if ali := cfg.App("shop-ali"); ali.PrivateKey == nil || ali.AlipayPublicKey == nil {
		t.Errorf("alipay keys not loaded")
	}
	if cfg.Endpoints.WeChatAPI != DefaultWeChatAPI || cfg.Limits.BodyBytes != DefaultBodyLimit {
		t.Errorf("defaults not applied: %+v %+v", cfg.Endpoints, cfg.Limits)
	}
	if got := cfg.NotifyURL(wx); got != "https://pay.example.com/callbacks/shop-wx/payments" {
		t.Errorf("NotifyURL = %s", got)
	}
	if strings.Contains(cfg.String(), "wxsecret") || strings.Contains(cfg.String(), "backend-key") {
		t.Errorf("String leaks secrets: %s", cfg.String())
	}
}

func TestParseJobsAndRetention(t *testing.T) {
	priv, pub := writeKeys(t, t.TempDir())
	for _, tc := range []struct {
		name, extra string
		want        func(*Config) bool
	}{
		{"defaults", "", func(c *Config) bool {
			return c.Jobs == Jobs{Timeout: DefaultJobTimeout, RescueAfter: DefaultJobRescueAfter} &&
				c.Retention == Retention{Callbacks: DefaultKeepCallbacks, Events: DefaultKeepEvents, Sessions: DefaultKeepSessions,
					CompletedJobs: DefaultKeepCompletedJobs, DiscardedJobs: DefaultKeepDiscardedJobs}
		}},
		{"set", "jobs: { timeout: 30s, rescue_after: 45s }\nretention: { callbacks: 720h, events: 48h, sessions: 24h, completed_jobs: 1h, discarded_jobs: 72h }\n",
			func(c *Config) bool {
				return c.Jobs == Jobs{Timeout: 30 * time.Second, RescueAfter: 45 * time.Second} &&
					c.Retention == Retention{Callbacks: 720 * time.Hour, Events: 48 * time.Hour, Sessions: 24 * time.Hour,
						CompletedJobs: time.Hour, DiscardedJobs: 72 * time.Hour}
			}},
		{"partly set", "retention: { events: 2160h }\n", func(c *Config) bool {
			return c.Retention.Events == 2160*time.Hour && c.Retention.Callbacks == DefaultKeepCallbacks && c.Jobs.Timeout == DefaultJobTimeout
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(validDoc(priv, pub)+tc.extra), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(cfg) {
				t.Fatalf("jobs %+v, retention %+v", cfg.Jobs, cfg.Retention)
			}
		})
	}
}

func TestParseExpansionCannotInjectYAML(t *testing.T) {
	priv, pub := writeKeys(t, t.TempDir())
	cfg, err := Parse([]byte(validDoc(priv, pub)), env(map[string]string{"WX_SECRET": "x\"\n  platform: qq #"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.App("shop-wx").AppSecret != "x\"\n  platform: qq #" || cfg.App("shop-wx").Platform != WeChat {
		t.Fatalf("expansion changed the document: %+v", cfg.App("shop-wx"))
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	priv, pub := writeKeys(t, dir)
	base := validDoc(priv, pub)
	for _, tc := range []struct {
		name, old, new string
		want           string
	}{
		{"unknown platform", "platform: qq", "platform: line", `config: app "shop-qq": platform: unknown platform "line"`},
		{"missing secret", `app_secret: "${WX_SECRET}"`, `app_secret: "${NOPE}"`, `config: app "shop-wx": app_secret: required`},
		{"unreadable key file", `private_key_file: "` + priv + `"
    alipay`, `private_key_file: "/nonexistent.pem"
    alipay`, `config: app "shop-ali": private_key_file: open /nonexistent.pem`},
		{"duplicate app id", "id: shop-qq", "id: shop-wx", `config: app "shop-wx": id: duplicate app id`},
		{"bad app id", "id: shop-qq", "id: Shop_QQ", `config: app "Shop_QQ": id: must match`},
		{"short api v3 key", `api_v3_key: "0123456789abcdef0123456789abcdef"`, `api_v3_key: "short"`, `config: app "shop-wx": pay.api_v3_key: must be 32 bytes, got 5`},
		{"bad aes key", aesKey43, "short", `config: app "shop-wx": messages.encoding_aes_key: must be 43 characters`},
		{"public key id without file", `public_key_file: "` + pub + `"`, ``, `config: app "shop-wx": pay.public_key_file: required with public_key_id`},
		{"qq pay without key", `api_key: "k"`, `api_key: ""`, `config: app "shop-qq": pay.api_key: required`},
		{"short secret key", `secret_key: "${SECRET}"`, `secret_key: "short"`, `config: secret_key: must be at least 32 bytes`},
		{"unknown key", `listen: ":9000"`, `listne: ":9000"`, `config: yaml:`},
		{"events without secret", `secret: "whsec_abc"`, ``, `config: events.secret: required`},
		{"bad endpoint", `listen: ":9000"`, "listen: \":9000\"\nendpoints: { wechat_api: \"ftp://x\" }", `config: endpoints.wechat_api: must be an absolute http(s) URL`},
		{"rescue before the job timeout", `listen: ":9000"`, "listen: \":9000\"\njobs: { timeout: 5m, rescue_after: 1m }", `config: jobs.rescue_after: must be at least jobs.timeout (5m0s)`},
		{"tiny job timeout", `listen: ":9000"`, "listen: \":9000\"\njobs: { timeout: 10ms }", `config: jobs.timeout: must be at least 1s`},
		{"bad duration", `listen: ":9000"`, "listen: \":9000\"\njobs: { timeout: soon }", `config: yaml:`},
		{"short callback retention", `listen: ":9000"`, "listen: \":9000\"\nretention: { callbacks: 24h }", `config: retention.callbacks: must be at least 48h0m0s`},
		{"short event retention", `listen: ":9000"`, "listen: \":9000\"\nretention: { events: 1h }", `config: retention.events: must be at least 24h0m0s`},
		{"short session retention", `listen: ":9000"`, "listen: \":9000\"\nretention: { sessions: 1h }", `config: retention.sessions: must be at least 24h0m0s`},
		{"xpay on qq", `pay: { mch_id: "123", api_key: "k" }`, `pay: { mch_id: "123", api_key: "k" }
    virtual_payment: { offer_id: "1", app_key: "k" }`, `config: app "shop-qq": virtual_payment: only wechat apps`},
		{"xpay without offer id", `offer_id: "1450000001", `, ``, `config: app "shop-wx": virtual_payment.offer_id: required`},
		{"xpay without app key", `app_key: "${XPAY_KEY}"`, `app_key: "${NOPE}"`, `config: app "shop-wx": virtual_payment.app_key: required with env production`},
		{"xpay sandbox without its key", `sandbox_app_key: "sandboxkey"`, `sandbox_app_key: "", env: sandbox`, `config: app "shop-wx": virtual_payment.sandbox_app_key: required with env sandbox`},
		{"xpay unknown env", `coin_price: 10`, `coin_price: 10, env: test`, `config: app "shop-wx": virtual_payment.env: must be production or sandbox`},
		{"xpay negative coin price", `coin_price: 10`, `coin_price: -1`, `config: app "shop-wx": virtual_payment.coin_price: must be from 0`},
		{"xpay without message token", `messages: { token: "tok", encoding_aes_key: "` + aesKey43 + `" }`, ``, `config: app "shop-wx": messages.token: required with virtual_payment`},
		{"short job retention", `listen: ":9000"`, "listen: \":9000\"\nretention: { completed_jobs: 1s }", `config: retention.completed_jobs: must be at least 1m`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(base, tc.old, tc.new, 1)
			if doc == base {
				t.Fatalf("test case did not change the document")
			}
			_, err := Parse([]byte(doc), env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error = %q, want prefix %q on one line", err, tc.want)
			}
		})
	}
}

// TestParseErrorsInAFixedOrder: a document with several errors reports the
// same one on every run — the first in the file's order — so fixing a config
// converges (the README's placeholder line once reported a different
// endpoints.* key each time).
func TestParseErrorsInAFixedOrder(t *testing.T) {
	dir := t.TempDir()
	priv, pub := writeKeys(t, dir)
	base := validDoc(priv, pub)
	for _, tc := range []struct{ name, add, want string }{
		{"every endpoint a placeholder", "endpoints: { wechat_api: …, wechatpay_api: …, qq_api: …, qpay_api: …, alipay_gateway: … }",
			`config: endpoints.wechat_api: must be an absolute http(s) URL, got "…"`},
		{"every retention too short", "retention: { completed_jobs: 1s, discarded_jobs: 1s, sessions: 1h, events: 1h }",
			`config: retention.events: must be at least 24h0m0s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(base, `listen: ":9000"`, "listen: \":9000\"\n"+tc.add, 1)
			for range 30 {
				_, err := Parse([]byte(doc), env(nil))
				if err == nil || err.Error() != tc.want {
					t.Fatalf("error = %v, want %q on every run", err, tc.want)
				}
			}
		})
	}
}

func TestDecodeEncodingAESKey(t *testing.T) {
	k, err := DecodeEncodingAESKey(aesKey43)
	if err != nil || len(k) != 32 {
		t.Fatalf("got %d bytes, %v", len(k), err)
	}
}

// FuzzParse: any document either parses into a valid config or fails with a
// one-line *Error; it never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validDoc("/nonexistent-key.pem", "/nonexistent-pub.pem")))
	f.Add([]byte("apps: [{id: a, platform: qq, app_id: '1', app_secret: s}]\ndatabase_url: x\nsecret_key: " + strings.Repeat("k", 32)))
	f.Add([]byte("{}"))
	f.Add([]byte("listen: ${X}\napps: [[]]"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		_, err := Parse(doc, env(nil))
		if err == nil {
			return
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error: %q", err)
		}
	})
}

func TestVirtualPaymentSandboxEnv(t *testing.T) {
	priv, pub := writeKeys(t, t.TempDir())
	doc := strings.Replace(validDoc(priv, pub), `coin_price: 10`, `coin_price: 10, env: sandbox`, 1)
	cfg, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if vp := cfg.App("shop-wx").VirtualPayment; !vp.Sandbox() || vp.ActiveAppKey() != "sandboxkey" {
		t.Fatalf("sandbox env: %+v signs with %q", vp, vp.ActiveAppKey())
	}
}
