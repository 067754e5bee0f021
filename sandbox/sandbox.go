// Package sandbox simulates the platforms minigate talks to — the WeChat API,
// WeChat Pay API v3, the QQ mini-program API, QQ wallet and the Alipay
// gateway — over real HTTP, with the real platforms' paths below
// /sandbox/{wechat,wechatpay,qq,qpay,alipay}. It signs, encrypts and verifies
// as the platforms do, keeps its own keys, and delivers callbacks to
// minigate, with faults on demand.
//
// The simulator is deliberately independent of minigate's adapters: it never
// imports them, so a misunderstanding of a protocol has to be made twice, in
// two places, to go unnoticed; its tests cross-check it against the SDKs'
// own signers and verifiers and against published test vectors.
//
// The simulator's state (users, codes, tokens, orders, bills) lives in
// memory: it stands in for the platforms, not for minigate's store.
package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Platform names, as in the config.
const (
	WeChat = "wechat"
	QQ     = "qq"
	Alipay = "alipay"
)

// CodeTTL is how long a login code stays valid, as on the real platforms.
const CodeTTL = 5 * time.Minute

// App is one simulated mini-program with the platform-side view of its
// credentials. The simulator holds the platform's private keys and the
// merchant's public keys; minigate holds the opposite halves.
type App struct {
	// ID is minigate's app id (the {app} in routes).
	ID         string
	Platform   string
	AppID      string
	AppSecret  string
	UnionScope string
	// OriginalID is the mini-program's original id (gh_…), the ToUserName
	// of message pushes.
	OriginalID string
	// CallbackURL is minigate's callback base for this app,
	// e.g. http://127.0.0.1:8080/callbacks/demo-wechat.
	CallbackURL string

	Messages  MessageSettings
	WeChatPay *WeChatPayMerchant
	QPay      *QPayMerchant
	Alipay    *AlipayAccount
	// XPay is WeChat virtual payment (WeChat apps).
	XPay *XPayAccount
}

// MessageSettings are the app's message-push console settings.
type MessageSettings struct {
	Token          string
	EncodingAESKey string // WeChat/QQ; empty = plaintext mode only
	// Mode is the default push mode: "plaintext", "compatible" or "safe".
	Mode string
	// Format is the default push format: "xml" or "json".
	Format string
	// AESKey is Alipay's content encryption key (base64), optional.
	AESKey string
}

// WeChatPayMerchant is a WeChat Pay API v3 merchant as the platform sees it.
type WeChatPayMerchant struct {
	MchID    string
	APIv3Key string
	// MerchantSerial and MerchantKey verify minigate's request signatures.
	MerchantSerial string
	MerchantKey    *rsa.PublicKey
	// PlatformKey signs responses and notifications.
	PlatformKey *rsa.PrivateKey
	// PlatformCert and PlatformSerial: certificate mode (served by
	// /v3/certificates). Nil in public-key-only mode.
	PlatformCert   *x509.Certificate
	PlatformSerial string
	// PublicKeyID is the WeChat Pay public key id (public-key mode).
	PublicKeyID string
	// SignWith selects the serial the platform signs with: "certificate"
	// or "public_key" (default: public_key when PublicKeyID is set).
	SignWith string
}

// QPayMerchant is a QQ wallet merchant.
type QPayMerchant struct {
	MchID  string
	APIKey string
}

// AlipayAccount is the platform-side view of an Alipay app.
type AlipayAccount struct {
	// AppPublicKey verifies minigate's RSA2 request signatures.
	AppPublicKey *rsa.PublicKey
	// AlipayKey signs responses and notifications (in certificate mode,
	// until Alipay's certificate is rotated).
	AlipayKey *rsa.PrivateKey
	SellerID  string
	// Certs is set for apps in public-key certificate mode.
	Certs *AlipayCerts
}

// User is a simulated user as one app sees them.
type User struct {
	Name    string
	OpenID  string
	UnionID string // empty when the app has no union scope
	// Alipay identities.
	AlipayUserID string
	AlipayOpenID string
	Phone        string
}

// Options configures New.
type Options struct {
	// Now replaces the clock (tests); nil means time.Now.
	Now func() time.Time
	// Client delivers callbacks to minigate; nil means a 10-second client.
	Client *http.Client
	Logger *slog.Logger
	// Redeliver, when not nil, is the retry schedule for callbacks that
	// were not acknowledged (see SetRedelivery); an empty, non-nil
	// schedule records every callback without retrying.
	Redeliver []time.Duration
}

// Sandbox is the simulator. Its zero value is not usable; call New.
type Sandbox struct {
	now    func() time.Time
	client *http.Client
	log    *slog.Logger

	mu    sync.Mutex
	apps  map[string]*App // by minigate app id
	codes map[string]*loginCode

	wechat    *wechatState
	wechatpay *wechatPayState
	qq        *qqState
	qpay      *qpayState
	alipay    *alipayState
	bills     *billState
	xpay      *xpayState

	redeliver *redelivery
	slow      *slowdown
}

type loginCode struct {
	app     string
	user    string
	kind    string // "login" or "phone"
	expires time.Time
	used    bool
}

// New returns an empty simulator.
func New(opts Options) *Sandbox {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Sandbox{
		now: opts.Now, client: opts.Client, log: opts.Logger,
		apps: map[string]*App{}, codes: map[string]*loginCode{},
		wechat: newWeChatState(), wechatpay: newWeChatPayState(),
		qq: newQQState(), qpay: newQPayState(), alipay: newAlipayState(), bills: newBillState(), xpay: newXPayState(),
		redeliver: newRedelivery(opts.Redeliver), slow: &slowdown{},
	}
}

// AddApp registers an app (replacing one with the same id).
func (s *Sandbox) AddApp(a *App) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[a.ID] = a
}

// App returns the app with minigate id id, or nil.
func (s *Sandbox) App(id string) *App {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apps[id]
}

// appByAppID finds an app by its platform app id.
func (s *Sandbox) appByAppID(platform, appID string) *App {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.apps {
		if a.Platform == platform && a.AppID == appID {
			return a
		}
	}
	return nil
}

// appsWhere returns the apps matching pred.
func (s *Sandbox) appsWhere(pred func(*App) bool) []*App {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*App
	for _, a := range s.apps {
		if pred(a) {
			out = append(out, a)
		}
	}
	return out
}

// User returns simulated user name as app sees them. Identities are derived
// from the names, so they are stable across restarts: the openid from the
// app id and the name, the unionid from the union scope and the name, the
// Alipay user id from the name alone and the Alipay open id from the app id
// and the name.
func (s *Sandbox) User(app *App, name string) User {
	u := User{Name: name, OpenID: "o" + digest(app.AppID, name)[:27]}
	if app.UnionScope != "" && app.Platform != Alipay {
		u.UnionID = "u" + digest("scope:"+app.UnionScope, name)[:27]
	}
	sum := sha256.Sum256([]byte("alipay-user:" + name))
	u.AlipayUserID = fmt.Sprintf("2088%012d", binary.BigEndian.Uint64(sum[:8])%1e12)
	u.AlipayOpenID = "0" + digest("alipay-open:"+app.AppID, name)[:39]
	u.Phone = fmt.Sprintf("138%08d", binary.BigEndian.Uint64(sum[8:16])%1e8)
	return u
}

func digest(scope, name string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + name))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// MintCode returns a fresh single-use code of the given kind ("login" or
// "phone") for user name of app.
func (s *Sandbox) MintCode(appID, name, kind string) (string, error) {
	if s.App(appID) == nil {
		return "", fmt.Errorf("sandbox: unknown app %q", appID)
	}
	code := randomHex(16)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Clone: control routes pass fiber path parameters, which point into
	// buffers fiber reuses after the handler returns.
	s.codes[code] = &loginCode{app: strings.Clone(appID), user: strings.Clone(name), kind: strings.Clone(kind), expires: s.now().Add(CodeTTL)}
	return code, nil
}

// codeResult says why a code could not be redeemed.
type codeResult int

const (
	codeOK codeResult = iota
	codeInvalid
	codeUsed
)

// redeemCode consumes code for app (by minigate id) and returns the user name.
func (s *Sandbox) redeemCode(app *App, code, kind string) (string, codeResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.codes[code]
	switch {
	case !ok || c.app != app.ID || c.kind != kind:
		return "", codeInvalid
	case c.used:
		return "", codeUsed
	case s.now().After(c.expires):
		return "", codeInvalid
	}
	c.used = true
	return c.user, codeOK
}

// injectedFailures queues failures injected by tests and control routes,
// per key (a minigate app id or a merchant id): each one answers the next
// times calls to its API (any API when that is empty) instead of the
// simulation, first injected first. The zero value is ready to use.
type injectedFailures[F any] struct {
	mu     sync.Mutex
	queued map[string][]*injectedFailure[F]
}

type injectedFailure[F any] struct {
	api   string
	times int
	fail  F
}

// add queues f for the next times calls (at least 1) to key's api.
func (q *injectedFailures[F]) add(key, api string, times int, f F) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queued == nil {
		q.queued = map[string][]*injectedFailure[F]{}
	}
	q.queued[key] = append(q.queued[key], &injectedFailure[F]{api: api, times: max(times, 1), fail: f})
}

// take consumes one call of the first failure queued for key's api, if any.
func (q *injectedFailures[F]) take(key, api string) (F, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	list := q.queued[key]
	for i, f := range list {
		if f.api != "" && f.api != api {
			continue
		}
		f.times--
		if f.times <= 0 {
			q.queued[key] = append(list[:i], list[i+1:]...)
		}
		return f.fail, true
	}
	var none F
	return none, false
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// Handler returns the simulator's routes, to be mounted at /sandbox.
func (s *Sandbox) Handler() *fiber.App {
	// Immutable: the simulator keeps request values (ids, names) in its
	// state; Fiber's strings would otherwise alias reused buffers.
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 20 << 20, Immutable: true})
	app.Use(s.slow.middleware)
	s.mountControl(app)
	s.mountWeChat(app.Group("/wechat"))
	s.mountWeChatPay(app.Group("/wechatpay"))
	s.mountQQ(app.Group("/qq"))
	s.mountQPay(app.Group("/qpay"))
	s.mountAlipay(app.Group("/alipay"))
	return app
}

// Delivery is one HTTP delivery of a callback to minigate and its answer.
type Delivery struct {
	Status     int    `json:"status"`
	Body       string `json:"body"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
	// Acked says whether the platform would count the answer as
	// "received" (see acknowledged); otherwise it would retry.
	Acked bool `json:"acked"`
	// At is when the delivery was sent.
	At time.Time `json:"at"`
}

// Report is what a control route did: the deliveries it made and the
// simulated objects involved.
type Report struct {
	Deliveries []Delivery      `json:"deliveries"`
	Dropped    bool            `json:"dropped,omitempty"`
	Details    map[string]any  `json:"details,omitempty"`
	Sent       json.RawMessage `json:"sent,omitempty"`
}

// post posts body to url once; ack says whether the answer counts as
// received.
func (s *Sandbox) post(ctx context.Context, url, contentType string, header http.Header, body []byte, ack func(Delivery) bool) Delivery {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytesReader(body))
	if err != nil {
		return Delivery{Error: err.Error(), At: start}
	}
	req.Header.Set("Content-Type", contentType)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := s.client.Do(req)
	d := Delivery{DurationMS: time.Since(start).Milliseconds(), At: start}
	if err != nil {
		d.Error = err.Error()
		return d
	}
	defer resp.Body.Close()
	b, _ := readLimited(resp.Body, 64<<10)
	d.Status, d.Body = resp.StatusCode, string(b)
	d.DurationMS = time.Since(start).Milliseconds()
	d.Acked = ack(d)
	return d
}
