// Package config loads and validates minigate's YAML configuration.
//
// The file is parsed once, in cmd/minigate, and the resulting *Config is
// passed explicitly to everything that needs it. `${VAR}` references inside
// scalar values are expanded from the environment after YAML parsing, so a
// secret containing YAML syntax cannot change the document's structure.
// DATABASE_URL from the environment wins over database_url.
//
// Every validation error is a single line naming the app (when there is one)
// and the key, e.g.
//
//	config: app "shop-wx": pay.api_v3_key: must be 32 bytes, got 31
package config

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// Platform names a mini-program platform.
type Platform string

// The supported platforms.
const (
	WeChat Platform = "wechat"
	QQ     Platform = "qq"
	Alipay Platform = "alipay"
)

// Defaults for optional settings.
const (
	DefaultListen                = ":8080"
	DefaultWeChatAPI             = "https://api.weixin.qq.com"
	DefaultWeChatPayAPI          = "https://api.mch.weixin.qq.com"
	DefaultQQAPI                 = "https://api.q.qq.com"
	DefaultQPayAPI               = "https://qpay.qq.com"
	DefaultAlipayGateway         = "https://openapi.alipay.com/gateway.do"
	DefaultBodyLimit             = 1 << 20 // bytes; callbacks and API bodies
	DefaultMediaBodyLimit        = 10 << 20
	DefaultUpstreamTimeout       = 8 * time.Second
	DefaultCallbackWindow        = 5 * time.Minute
	DefaultSessionTTL            = 30 * 24 * time.Hour
	DefaultReconcileAt           = "10:30"
	DefaultRejectedCallbacksKept = 10000
	minSecretKeyBytes            = 32
	minAPIKeyBytes               = 16
)

// Defaults for the jobs and retention sections.
const (
	// DefaultJobTimeout bounds one run of a background job that sets no
	// timeout of its own.
	DefaultJobTimeout = 2 * time.Minute
	// DefaultJobRescueAfter is how long a job may stay "running" before it
	// is taken for abandoned (its instance died mid-run) and run again.
	DefaultJobRescueAfter = 10 * time.Minute
	// DefaultKeepCallbacks keeps verified callbacks — the de-duplication
	// record and what operators look at — for 90 days.
	DefaultKeepCallbacks = 90 * 24 * time.Hour
	// DefaultKeepEvents keeps finished events (delivered, failed,
	// not_configured) and their delivery attempts for 90 days.
	DefaultKeepEvents = 90 * 24 * time.Hour
	// DefaultKeepSessions keeps expired and revoked session tokens for 30
	// days after they ended.
	DefaultKeepSessions = 30 * 24 * time.Hour
	// DefaultKeepCompletedJobs keeps finished background jobs for a day.
	DefaultKeepCompletedJobs = 24 * time.Hour
	// DefaultKeepDiscardedJobs keeps jobs that gave up (or were cancelled)
	// for 7 days.
	DefaultKeepDiscardedJobs = 7 * 24 * time.Hour
	// MinKeepCallbacks is the shortest callbacks retention: platforms retry
	// a callback for about a day (Alipay 25 hours), and a retry that
	// arrives after its callback was pruned is accepted as new.
	MinKeepCallbacks = 48 * time.Hour
	// minKeep is the shortest retention of events and sessions.
	minKeep = 24 * time.Hour
)

// Config is the whole configuration file. Fields tagged `yaml:"-"` are filled
// by Load (parsed key material) or by sandbox mode.
type Config struct {
	Listen      string    `yaml:"listen"`
	DatabaseURL string    `yaml:"database_url"`
	PublicURL   string    `yaml:"public_url"`
	SecretKey   string    `yaml:"secret_key"`
	APIKeys     []APIKey  `yaml:"api_keys"`
	Events      Events    `yaml:"events"`
	Endpoints   Endpoints `yaml:"endpoints"`
	Apps        []*App    `yaml:"apps"`

	// Limits are optional extensions of the contract's file format.
	Limits Limits `yaml:"limits"`
	// Sessions configures mini-program session tokens.
	Sessions Sessions `yaml:"sessions"`
	// Reconcile configures the daily reconciliation job.
	Reconcile Reconcile `yaml:"reconcile"`
	// Jobs configures the background job queue.
	Jobs Jobs `yaml:"jobs"`
	// Retention says how long finished records are kept.
	Retention Retention `yaml:"retention"`

	// Sandbox is true when minigate runs with the built-in simulator.
	Sandbox bool `yaml:"-"`
}

// APIKey is a named key for the server-to-server and operator API.
type APIKey struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

// Events configures delivery of minigate's own signed events.
type Events struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
}

// Endpoints are the platforms' base URLs; the defaults are the real ones.
type Endpoints struct {
	WeChatAPI     string `yaml:"wechat_api"`
	WeChatPayAPI  string `yaml:"wechatpay_api"`
	QQAPI         string `yaml:"qq_api"`
	QPayAPI       string `yaml:"qpay_api"`
	AlipayGateway string `yaml:"alipay_gateway"`
}

// Limits bound what minigate accepts and how long it waits.
type Limits struct {
	// BodyBytes bounds every request body except media uploads.
	BodyBytes int `yaml:"body_bytes"`
	// MediaBytes bounds media upload bodies.
	MediaBytes int `yaml:"media_bytes"`
	// UpstreamTimeout bounds each call to a platform.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// CallbackWindow is how far a callback's timestamp may be from now.
	CallbackWindow time.Duration `yaml:"callback_window"`
	// RejectedCallbacksKept bounds the rejected-callbacks table.
	RejectedCallbacksKept int `yaml:"rejected_callbacks_kept"`
}

// Sessions configures mini-program session tokens.
type Sessions struct {
	TTL time.Duration `yaml:"ttl"`
}

// Reconcile configures the daily reconciliation job.
type Reconcile struct {
	// At is the Asia/Shanghai wall-clock time "HH:MM" of the daily run.
	At string `yaml:"at"`
	// Disabled turns the daily job off.
	Disabled bool `yaml:"disabled"`
}

// Jobs configures the background job queue (River, in Postgres).
type Jobs struct {
	// Timeout bounds one run of a job that sets no timeout of its own.
	Timeout time.Duration `yaml:"timeout"`
	// RescueAfter is how long a job may stay running before it is taken
	// for abandoned — its instance was killed mid-run — and run again. A
	// shorter value retries sooner after a crash; it must be at least
	// Timeout, or jobs still running would be run twice.
	RescueAfter time.Duration `yaml:"rescue_after"`
}

// Retention says how long finished records are kept; an hourly job deletes
// older ones. Orders, refunds, their timelines and the inbox are never
// deleted.
type Retention struct {
	// Callbacks: verified callbacks, by receipt time (at least
	// MinKeepCallbacks).
	Callbacks time.Duration `yaml:"callbacks"`
	// Events: delivered, failed and not_configured events with their
	// delivery attempts, by creation time. Pending events are kept.
	Events time.Duration `yaml:"events"`
	// Sessions: session tokens, counted from their expiry or revocation.
	Sessions time.Duration `yaml:"sessions"`
	// CompletedJobs and DiscardedJobs: finished background jobs (River
	// deletes them itself); discarded covers cancelled jobs too.
	CompletedJobs time.Duration `yaml:"completed_jobs"`
	DiscardedJobs time.Duration `yaml:"discarded_jobs"`
}

// App is one mini-program on one platform.
type App struct {
	ID         string   `yaml:"id"`
	Platform   Platform `yaml:"platform"`
	AppID      string   `yaml:"app_id"`
	AppSecret  string   `yaml:"app_secret"`
	UnionScope string   `yaml:"union_scope"`
	Messages   Messages `yaml:"messages"`
	Pay        *Pay     `yaml:"pay"`
	// VirtualPayment is WeChat virtual payment (xpay); nil when the app
	// does not sell virtual goods or coins.
	VirtualPayment *VirtualPayment `yaml:"virtual_payment"`

	// Alipay application keys: the application private key, and either the
	// Alipay public key (public-key mode) or three certificate files
	// (public-key certificate mode, 公钥证书模式).
	PrivateKeyFile      string `yaml:"private_key_file"`
	AlipayPublicKeyFile string `yaml:"alipay_public_key_file"`
	AppCertFile         string `yaml:"app_cert_file"`
	AlipayCertFile      string `yaml:"alipay_cert_file"`
	AlipayRootCertFile  string `yaml:"alipay_root_cert_file"`

	// PrivateKey is the parsed Alipay application private key.
	PrivateKey *rsa.PrivateKey `yaml:"-"`
	// AlipayPublicKey is the parsed Alipay public key (public-key mode).
	AlipayPublicKey *rsa.PublicKey `yaml:"-"`
	// AppCert is the application's public-key certificate
	// (appCertPublicKey_<app_id>.crt; certificate mode).
	AppCert *x509.Certificate `yaml:"-"`
	// AlipayCerts is the Alipay public-key certificate file
	// (alipayCertPublicKey_RSA2.crt), leaf first, then its issuers.
	AlipayCerts []*x509.Certificate `yaml:"-"`
	// AlipayRootCerts are the root bundle's (alipayRootCert.crt)
	// certificates, in file order; blocks Go cannot parse (the SM2 root)
	// are left out.
	AlipayRootCerts []*x509.Certificate `yaml:"-"`
}

// AlipayCertMode reports whether the Alipay app uses public-key
// certificate mode rather than public-key mode.
func (a *App) AlipayCertMode() bool { return a.AppCert != nil }

// Messages configures message push ("消息推送").
type Messages struct {
	// Token signs WeChat/QQ message pushes.
	Token string `yaml:"token"`
	// EncodingAESKey (43 chars) enables compatible/safe mode for WeChat/QQ.
	EncodingAESKey string `yaml:"encoding_aes_key"`
	// AESKey is Alipay's optional content encryption key (base64).
	AESKey string `yaml:"aes_key"`
}

// Pay configures the app's merchant account.
type Pay struct {
	MchID string `yaml:"mch_id"`

	// WeChat Pay API v3.
	SerialNo       string `yaml:"serial_no"`
	PrivateKeyFile string `yaml:"private_key_file"`
	APIv3Key       string `yaml:"api_v3_key"`
	PublicKeyID    string `yaml:"public_key_id"`
	PublicKeyFile  string `yaml:"public_key_file"`

	// QQ wallet.
	APIKey string `yaml:"api_key"`
	// QQ wallet refunds need the merchant's client certificate and an operator.
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	OpUserID     string `yaml:"op_user_id"`
	OpUserPasswd string `yaml:"op_user_passwd"`

	// Alipay: the merchant's seller id (2088…); notifications must carry it.
	SellerID string `yaml:"seller_id"`

	// PrivateKey is the parsed WeChat Pay merchant private key.
	PrivateKey *rsa.PrivateKey `yaml:"-"`
	// PublicKey is the parsed WeChat Pay public key (public-key mode).
	PublicKey *rsa.PublicKey `yaml:"-"`
}

// Virtual payment environments (virtual_payment.env).
const (
	VirtualPaymentProduction = "production"
	VirtualPaymentSandbox    = "sandbox"
)

// VirtualPayment configures WeChat virtual payment (虚拟支付, xpay): the
// values of the mini-program console's 虚拟支付 → 基础配置 page.
type VirtualPayment struct {
	// OfferID is the console's offerid (signData.offerId).
	OfferID string `yaml:"offer_id"`
	// AppKey signs production requests; SandboxAppKey sandbox ones.
	AppKey        string `yaml:"app_key"`
	SandboxAppKey string `yaml:"sandbox_app_key"`
	// Env is production (the default) or sandbox: which AppKey signs and
	// which environment orders are made in.
	Env string `yaml:"env"`
	// CoinPrice is the price of one coin in fen, as set with the coin
	// exchange rate in the console; 0 means coins are not sold
	// (virtual_coins orders are refused).
	CoinPrice int64 `yaml:"coin_price"`
}

// Sandbox reports whether the app uses WeChat's virtual payment sandbox.
func (v *VirtualPayment) Sandbox() bool { return v.Env == VirtualPaymentSandbox }

// ActiveAppKey is the AppKey of the configured environment.
func (v *VirtualPayment) ActiveAppKey() string {
	if v.Sandbox() {
		return v.SandboxAppKey
	}
	return v.AppKey
}

// Error is a configuration error: one line naming the app and the key.
type Error struct {
	App string // empty for top-level keys
	Key string
	Msg string
}

func (e *Error) Error() string {
	if e.App != "" {
		return fmt.Sprintf("config: app %q: %s: %s", e.App, e.Key, e.Msg)
	}
	return fmt.Sprintf("config: %s: %s", e.Key, e.Msg)
}

// Load reads, expands, parses and validates the file at path.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Key: "file", Msg: err.Error()}
	}
	return Parse(raw, os.LookupEnv)
}

// Parse parses and validates a configuration document. lookup resolves
// `${VAR}` references and the DATABASE_URL override.
func Parse(raw []byte, lookup func(string) (string, bool)) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, &Error{Key: "yaml", Msg: oneLine(err)}
	}
	expandNode(&doc, lookup)
	expanded, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, &Error{Key: "yaml", Msg: oneLine(err)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	cfg := &Config{}
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{Key: "yaml", Msg: oneLine(err)}
	}
	if v, ok := lookup("DATABASE_URL"); ok && v != "" {
		cfg.DatabaseURL = v
	}
	if err := Finish(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Finish applies defaults to a configuration built in code (sandbox mode,
// tests) or parsed from a file, and validates it.
func Finish(cfg *Config) error {
	cfg.applyDefaults()
	return cfg.Validate()
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func expandNode(n *yaml.Node, lookup func(string) (string, bool)) {
	if n.Kind == yaml.ScalarNode {
		n.Value = varRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			v, _ := lookup(m[2 : len(m)-1])
			return v
		})
		return
	}
	for _, c := range n.Content {
		expandNode(c, lookup)
	}
}

func oneLine(err error) string {
	return string(bytes.ReplaceAll([]byte(err.Error()), []byte("\n"), []byte("; ")))
}

func (c *Config) applyDefaults() {
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.Endpoints.WeChatAPI, DefaultWeChatAPI)
	setDefault(&c.Endpoints.WeChatPayAPI, DefaultWeChatPayAPI)
	setDefault(&c.Endpoints.QQAPI, DefaultQQAPI)
	setDefault(&c.Endpoints.QPayAPI, DefaultQPayAPI)
	setDefault(&c.Endpoints.AlipayGateway, DefaultAlipayGateway)
	setDefault(&c.Reconcile.At, DefaultReconcileAt)
	if c.Limits.BodyBytes == 0 {
		c.Limits.BodyBytes = DefaultBodyLimit
	}
	if c.Limits.MediaBytes == 0 {
		c.Limits.MediaBytes = DefaultMediaBodyLimit
	}
	if c.Limits.UpstreamTimeout == 0 {
		c.Limits.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.Limits.CallbackWindow == 0 {
		c.Limits.CallbackWindow = DefaultCallbackWindow
	}
	if c.Limits.RejectedCallbacksKept == 0 {
		c.Limits.RejectedCallbacksKept = DefaultRejectedCallbacksKept
	}
	if c.Sessions.TTL == 0 {
		c.Sessions.TTL = DefaultSessionTTL
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.Jobs.Timeout, DefaultJobTimeout}, {&c.Jobs.RescueAfter, DefaultJobRescueAfter},
		{&c.Retention.Callbacks, DefaultKeepCallbacks}, {&c.Retention.Events, DefaultKeepEvents},
		{&c.Retention.Sessions, DefaultKeepSessions}, {&c.Retention.CompletedJobs, DefaultKeepCompletedJobs},
		{&c.Retention.DiscardedJobs, DefaultKeepDiscardedJobs},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
}

func setDefault(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

// App returns the app with the given minigate id, or nil.
func (c *Config) App(id string) *App {
	for _, a := range c.Apps {
		if a.ID == id {
			return a
		}
	}
	return nil
}

// NotifyURL is the payment notification URL minigate gives the platform for app.
func (c *Config) NotifyURL(app *App) string {
	return c.PublicURL + "/callbacks/" + app.ID + "/payments"
}

// String masks secrets so a Config can be logged.
func (c *Config) String() string {
	return fmt.Sprintf("config{listen=%s apps=%d api_keys=%d events=%t sandbox=%t}",
		c.Listen, len(c.Apps), len(c.APIKeys), c.Events.URL != "", c.Sandbox)
}
