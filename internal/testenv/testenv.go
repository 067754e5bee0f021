// Package testenv runs real minigate instances against the simulator for
// end-to-end tests: one simulator per test process (the WeChat SDK's
// endpoint hook is process-wide), and per test a fresh database, freshly
// generated apps and a minigate instance listening on a loopback port.
//
// App ids are made unique per test ("wx" becomes "wx-3f9a1c"), because the
// simulator is shared; use Env.App("wx").ID in URLs.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/accesstoken"
	"github.com/minigate/minigate/internal/app"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

// APIKey is the operator API key every test instance accepts.
const APIKey = "test-operator-key-0123456789"

var (
	simOnce sync.Once
	sim     *sandbox.Sandbox
	simURL  string
	simErr  error

	keyOnce sync.Once
	keys    []*rsa.PrivateKey
	keyMu   sync.Mutex
	keyNext int
)

// Simulator returns the process's shared simulator and its base URL
// (ending in /sandbox).
func Simulator(t testing.TB) (*sandbox.Sandbox, string) {
	t.Helper()
	simOnce.Do(func() {
		sim = sandbox.New(sandbox.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		srv := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 20 << 20})
		srv.Mount("/sandbox", sim.Handler())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			simErr = err
			return
		}
		go func() { _ = srv.Listener(ln) }()
		simURL = "http://" + ln.Addr().String() + "/sandbox"
	})
	if simErr != nil {
		t.Fatalf("testenv: simulator: %v", simErr)
	}
	return sim, simURL
}

// Key hands out RSA keys from a small pool generated once per process, so
// tests do not spend seconds generating keys. Consecutive calls return
// different keys.
func Key() (*rsa.PrivateKey, error) {
	keyOnce.Do(func() {
		for range 8 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys = append(keys, k)
		}
	})
	keyMu.Lock()
	defer keyMu.Unlock()
	k := keys[keyNext%len(keys)]
	keyNext++
	return k, nil
}

// Spec describes the instance a test wants.
type Spec struct {
	// Apps to generate; IDs are short names made unique per test.
	Apps []sandbox.AppSpec
	// Events configures event delivery (optional).
	Events config.Events
	// Configure adjusts the config before the instance is built.
	Configure func(*config.Config)
	// DatabaseURL reuses a database (e.g. to run two instances on one);
	// empty means a fresh one.
	DatabaseURL string
	// Now replaces the clock in domain services.
	Now func() time.Time
}

// Env is a running minigate instance wired to the simulator.
type Env struct {
	T          testing.TB
	URL        string // minigate's base URL
	Minigate   *app.App
	Config     *config.Config
	DB         *sqlx.DB
	DBURL      string
	Sandbox    *sandbox.Sandbox
	SandboxURL string
	Logs       *LogBuffer

	apps map[string]*config.App
}

// Start builds, migrates and starts an instance for t; it is shut down when
// the test ends.
func Start(t testing.TB, spec Spec) *Env {
	t.Helper()
	sb, sbURL := Simulator(t)
	dbURL := spec.DatabaseURL
	if dbURL == "" {
		dbURL = pgtest.NewURL(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	suffix := randomHex(3)
	e := &Env{T: t, URL: public, Sandbox: sb, SandboxURL: sbURL, DBURL: dbURL, Logs: &LogBuffer{}, apps: map[string]*config.App{}}
	cfg := &config.Config{
		Listen:      ln.Addr().String(),
		DatabaseURL: dbURL,
		PublicURL:   public,
		SecretKey:   "test-secret-key-0123456789abcdef0123456789",
		APIKeys:     []config.APIKey{{Name: "test", Key: APIKey}},
		Events:      spec.Events,
		Endpoints:   sandbox.Endpoints(sbURL),
	}
	for _, as := range spec.Apps {
		short := as.ID
		as.ID = short + "-" + suffix
		as.PublicURL = public
		if as.Key == nil {
			as.Key = Key
		}
		sbApp, cfgApp, err := sandbox.NewAppPair(as)
		if err != nil {
			t.Fatalf("testenv: app %s: %v", short, err)
		}
		sb.AddApp(sbApp)
		cfg.Apps = append(cfg.Apps, cfgApp)
		e.apps[short] = cfgApp
	}
	if spec.Configure != nil {
		spec.Configure(cfg)
	}
	if err := config.Finish(cfg); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	e.Config = cfg
	log := slog.New(slog.NewJSONHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	check := &apiCheck{t: t}
	a, err := app.New(ctx, cfg, app.Options{
		Logger: log, Migrate: true, JobPollInterval: 50 * time.Millisecond, Now: spec.Now,
		Middleware: []fiber.Handler{check.middleware},
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	e.Minigate, e.DB = a, a.DB
	if err := a.Start(ctx); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	checkedServers.Store(public, true)
	go func() { _ = a.Serve(ln) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(sctx)
		check.stopped.Store(true)
		checkedServers.Delete(public)
		if t.Failed() {
			t.Logf("minigate logs (last 64 KiB):\n%s", e.Logs.Tail(64<<10))
		}
	})
	return e
}

// App returns the configured app generated for short name name.
func (e *Env) App(name string) *config.App {
	a, ok := e.apps[name]
	if !ok {
		e.T.Fatalf("testenv: no app %q", name)
	}
	return a
}

// SandboxApp returns the simulator's view of app short name name.
func (e *Env) SandboxApp(name string) *sandbox.App {
	return e.Sandbox.App(e.App(name).ID)
}

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the body into v, failing the test on error.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %d response %q: %v", r.Status, r.Body, err)
	}
}

// Expect fails the test, naming what was asked, unless the response has
// status; then it decodes the body into v, unless v is nil.
func (r *Response) Expect(t testing.TB, status int, what string, v any) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: %d %s", what, r.Status, r.Body)
	}
	if v != nil {
		r.Decode(t, v)
	}
}

// ErrorCode returns the contract error code in the body, if any.
func (r *Response) ErrorCode() string {
	var b struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &b)
	return b.Error.Code
}

// Opt adjusts a request.
type Opt func(*http.Request)

// Bearer authenticates with token.
func Bearer(token string) Opt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// Operator authenticates with the test API key.
func Operator() Opt { return Bearer(APIKey) }

// Header sets a header.
func Header(k, v string) Opt { return func(r *http.Request) { r.Header.Set(k, v) } }

// Do sends a request to minigate. body may be nil, []byte, string or a value
// to encode as JSON.
func (e *Env) Do(method, path string, body any, opts ...Opt) *Response {
	e.T.Helper()
	return Do(e.T, method, e.URL+path, body, opts...)
}

// Do sends a request to an absolute URL. An exchange with a /v1 route of a
// server that Start did not start (a built binary) is checked against the
// API description here (CheckAPI), failing t on a mismatch; Start's
// instances check their own.
func Do(t testing.TB, method, url string, body any, opts ...Opt) *Response {
	t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !checkedByServer(url) {
		x := Exchange{Method: method, URL: req.URL, Header: req.Header, Status: resp.StatusCode, RespHeader: resp.Header, RespBody: raw}
		x.Body, _ = requestBody(req)
		if msg := CheckAPI(x); msg != "" {
			t.Errorf("%s", msg)
		}
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// requestBody returns the body req was sent with.
func requestBody(req *http.Request) ([]byte, error) {
	if req.GetBody == nil {
		return nil, nil
	}
	rc, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// MintCode asks the simulator for a login code for user name of app short name.
func (e *Env) MintCode(app, name string) string {
	e.T.Helper()
	code, err := e.Sandbox.MintCode(e.App(app).ID, name, "login")
	if err != nil {
		e.T.Fatal(err)
	}
	return code
}

// Session is a user logged in through minigate's API.
type Session struct {
	Token  string
	UserID string
	OpenID string
}

// Login logs user name in to app short name through the API, with a fresh
// code from the simulator, and fails the test unless it succeeds.
func (e *Env) Login(t testing.TB, app, name string) Session {
	t.Helper()
	var out struct {
		Token string `json:"token"`
		User  struct {
			ID     string `json:"id"`
			OpenID string `json:"openid"`
		} `json:"user"`
	}
	e.Do(http.MethodPost, "/v1/apps/"+e.App(app).ID+"/sessions", map[string]any{"code": e.MintCode(app, name)}).
		Expect(t, http.StatusCreated, "login "+name, &out)
	return Session{Token: out.Token, UserID: out.User.ID, OpenID: out.User.OpenID}
}

// LogBuffer collects an instance's logs (safe for concurrent writes).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Tail returns at most the last n bytes.
func (l *LogBuffer) Tail(n int) string {
	s := l.String()
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Eventually polls cond every 20ms until it returns true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprint(what))
}

// Testdata returns the file testdata/elem… of the calling test's package
// (tests run in their package's directory).
func Testdata(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"testdata"}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FetcherTokens is a TokenSource for adapter tests without a database: it
// fetches through F, keeps one token, and force-refreshes when told the
// current one is stale.
type FetcherTokens struct {
	F         accesstoken.Fetcher
	mu        sync.Mutex
	cur       string
	refreshes int
}

// Token returns the kept token, fetching one the first time.
func (s *FetcherTokens) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == "" {
		tok, err := s.F.FetchAccessToken(ctx, false)
		if err != nil {
			return "", err
		}
		s.cur = tok.Value
	}
	return s.cur, nil
}

// Refresh force-refreshes the token if stale is the kept one.
func (s *FetcherTokens) Refresh(ctx context.Context, stale string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshes++
	if stale == s.cur {
		tok, err := s.F.FetchAccessToken(ctx, true)
		if err != nil {
			return "", err
		}
		s.cur = tok.Value
	}
	return s.cur, nil
}

// Refreshes counts the Refresh calls.
func (s *FetcherTokens) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// ParsedBill checks what a bill parser made of arbitrary input (fuzz
// targets): a refusal must be a *reconcile.ParseError, and every row of a
// bill must name its order, a refund row its refund too. It reports
// whether there is a bill to check further.
func ParsedBill(t testing.TB, b *reconcile.Bill, err error) bool {
	t.Helper()
	if err != nil {
		var pe *reconcile.ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("not a ParseError: %v", err)
		}
		return false
	}
	for _, r := range b.Rows {
		if r.OutTradeNo == "" || (r.Kind == reconcile.KindRefund && r.OutRefundNo == "") {
			t.Fatalf("row without its numbers: %+v", r)
		}
	}
	return true
}

// Clock is a settable clock for minigate's services and adapters: the real
// time, moved on by Advance. The simulator keeps real time, so what it
// dates (pushes, tokens) must happen before the clock is moved. The zero
// value reads the real time.
type Clock struct{ offset atomic.Int64 }

// Now returns the real time plus what Advance added.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
