package wechat_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// simApp registers a fresh app with the process's shared simulator and
// returns both views of it and adapter options pointing at the simulator.
func simApp(t *testing.T, spec sandbox.AppSpec) (*sandbox.Sandbox, *sandbox.App, *config.App, adapters.Options) {
	t.Helper()
	sim, simURL := testenv.Simulator(t)
	if spec.ID == "" {
		spec.ID = "wx"
	}
	if spec.Platform == "" {
		spec.Platform = sandbox.WeChat
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	spec.ID += "-" + hex.EncodeToString(suffix)
	sb, cfg, err := sandbox.NewAppPair(spec)
	if err != nil {
		t.Fatal(err)
	}
	sim.AddApp(sb)
	return sim, sb, cfg, adapters.Options{Endpoints: sandbox.Endpoints(simURL), Timeout: 10 * time.Second}
}

func newClient(t *testing.T, cfg *config.App, opts adapters.Options) *wechat.Client {
	t.Helper()
	c, err := wechat.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stuckTokens always hands out the same token, even on refresh.
type stuckTokens struct {
	mu        sync.Mutex
	token     string
	err       error
	refreshes int
}

func (s *stuckTokens) Token(context.Context) (string, error) { return s.token, s.err }

func (s *stuckTokens) Refresh(context.Context, string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshes++
	return s.token, s.err
}

func wantPlatformError(t *testing.T, err error, reason adapters.Reason, code string) *adapters.PlatformError {
	t.Helper()
	pe, ok := adapters.AsPlatformError(err)
	if !ok || pe.Reason != reason || (code != "" && pe.Code != code) || pe.Platform != "wechat" {
		t.Fatalf("err = %v, want reason %s code %q", err, reason, code)
	}
	return pe
}

func TestCode2Session(t *testing.T) {
	t.Parallel()
	sim, sb, cfg, opts := simApp(t, sandbox.AppSpec{UnionScope: "brand"})
	c := newClient(t, cfg, opts)
	ctx := context.Background()
	mint := func(name string) string {
		code, err := sim.MintCode(sb.ID, name, "login")
		if err != nil {
			t.Fatal(err)
		}
		return code
	}

	login, err := c.Code2Session(ctx, mint("alice"))
	alice := sim.User(sb, "alice")
	if err != nil || login.OpenID != alice.OpenID || login.UnionID != alice.UnionID || alice.UnionID == "" || login.SessionKey == "" {
		t.Fatalf("login = %+v, %v; want %+v", login, err, alice)
	}

	used := mint("bob")
	if _, err := c.Code2Session(ctx, used); err != nil {
		t.Fatal(err)
	}
	wrongSecret := *cfg
	wrongSecret.AppSecret = "not-the-secret"
	tests := []struct {
		name   string
		client *wechat.Client
		code   func() string
		ctx    func() (context.Context, context.CancelFunc)
		reason adapters.Reason
		errc   string
	}{
		{"used code", c, func() string { return used }, nil, adapters.ReasonInvalidCode, "40163"},
		{"unknown code", c, func() string { return "bogus" }, nil, adapters.ReasonInvalidCode, "40029"},
		{"code smuggling parameters", c, func() string { return mint("carol") + "&grant_type=x" }, nil, adapters.ReasonInvalidCode, "40029"},
		{"high-risk user", c, func() string { return mint("risky-mallory") }, nil, adapters.ReasonHighRisk, "40226"},
		{"platform busy", c, func() string {
			sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "jscode2session", ErrCode: -1, ErrMsg: "system error"})
			return mint("dave")
		}, nil, adapters.ReasonBusy, "-1"},
		{"rate limited", c, func() string {
			sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "jscode2session", ErrCode: 45011})
			return mint("erin")
		}, nil, adapters.ReasonRateLimited, "45011"},
		{"wrong secret", newClient(t, &wrongSecret, opts), func() string { return mint("frank") }, nil, adapters.ReasonAuth, "40125"},
		{"deadline passed", c, func() string { return mint("grace") }, func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(ctx, time.Now().Add(-time.Second))
		}, adapters.ReasonTimeout, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			callCtx := ctx
			if tt.ctx != nil {
				var cancel context.CancelFunc
				callCtx, cancel = tt.ctx()
				defer cancel()
			}
			_, err := tt.client.Code2Session(callCtx, tt.code())
			wantPlatformError(t, err, tt.reason, tt.errc)
			if strings.Contains(err.Error(), cfg.AppSecret) || strings.Contains(err.Error(), wrongSecret.AppSecret) {
				t.Fatalf("error leaks the app secret: %v", err)
			}
		})
	}
}

func TestPhoneNumber(t *testing.T) {
	t.Parallel()
	sim, sb, cfg, opts := simApp(t, sandbox.AppSpec{})
	tokens := &testenv.FetcherTokens{F: wechat.NewTokenFetcher(cfg, opts)}
	opts.Tokens = tokens
	c := newClient(t, cfg, opts)
	ctx := context.Background()
	mint := func(name string) string {
		code, err := sim.MintCode(sb.ID, name, "phone")
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	alice := sim.User(sb, "alice")

	phone, err := c.PhoneNumber(ctx, mint("alice"))
	if err != nil || phone.PhoneNumber != alice.Phone || phone.PurePhoneNumber != alice.Phone || phone.CountryCode != "86" {
		t.Fatalf("phone = %+v, %v; want %s", phone, err, alice.Phone)
	}

	t.Run("token invalidated mid-flight: one refresh, one retry", func(t *testing.T) {
		before := sim.WeChatTokenStats(sb.ID)
		sim.InvalidateWeChatTokens(sb.ID)
		phone, err := c.PhoneNumber(ctx, mint("alice"))
		if err != nil || phone.PhoneNumber != alice.Phone {
			t.Fatalf("phone = %+v, %v", phone, err)
		}
		after := sim.WeChatTokenStats(sb.ID)
		if tokens.Refreshes() != 1 || after.ForceRefreshes-before.ForceRefreshes != 1 || after.Rejected-before.Rejected != 1 {
			t.Fatalf("refreshes %d, simulator before %+v after %+v", tokens.Refreshes(), before, after)
		}
	})

	t.Run("invalid code", func(t *testing.T) {
		_, err := c.PhoneNumber(ctx, "bogus")
		wantPlatformError(t, err, adapters.ReasonInvalidCode, "40029")
	})

	t.Run("a login code is not a phone code", func(t *testing.T) {
		code, err := sim.MintCode(sb.ID, "alice", "login")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.PhoneNumber(ctx, code)
		wantPlatformError(t, err, adapters.ReasonInvalidCode, "40029")
	})

	t.Run("refresh that does not help: one retry only", func(t *testing.T) {
		stuck := &stuckTokens{token: "not-a-token"}
		o := opts
		o.Tokens = stuck
		_, err := newClient(t, cfg, o).PhoneNumber(ctx, mint("alice"))
		wantPlatformError(t, err, adapters.ReasonInvalidToken, "40001")
		if stuck.refreshes != 1 {
			t.Fatalf("%d refreshes, want 1", stuck.refreshes)
		}
	})

	t.Run("token source failure", func(t *testing.T) {
		o := opts
		o.Tokens = &stuckTokens{err: &adapters.PlatformError{Platform: "wechat", API: "stable_token", Reason: adapters.ReasonAuth}}
		_, err := newClient(t, cfg, o).PhoneNumber(ctx, mint("alice"))
		wantPlatformError(t, err, adapters.ReasonAuth, "")
	})

	t.Run("no token source", func(t *testing.T) {
		o := opts
		o.Tokens = nil
		if _, err := newClient(t, cfg, o).PhoneNumber(ctx, mint("alice")); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestTokenFetcher(t *testing.T) {
	t.Parallel()
	sim, sb, cfg, opts := simApp(t, sandbox.AppSpec{})
	ctx := context.Background()
	f := wechat.NewTokenFetcher(cfg, opts)

	first, err := f.FetchAccessToken(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(first.ExpiresAt); d < sandbox.WeChatTokenTTL-time.Minute || d > sandbox.WeChatTokenTTL {
		t.Fatalf("expires in %v", d)
	}
	again, err := f.FetchAccessToken(ctx, false)
	if err != nil || again.Value != first.Value {
		t.Fatalf("normal fetch = %+v, %v; want the same token", again, err)
	}
	forced, err := f.FetchAccessToken(ctx, true)
	if err != nil || forced.Value == first.Value {
		t.Fatalf("forced fetch = %+v, %v; want a new token", forced, err)
	}
	if st := sim.WeChatTokenStats(sb.ID); st.Issued != 2 || st.ForceRefreshes != 1 {
		t.Fatalf("simulator stats %+v", st)
	}

	answering := func(status int, body string, delay time.Duration) adapters.Options {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		o := opts
		o.Endpoints.WeChatAPI = srv.URL
		return o
	}
	closed := opts
	closed.Endpoints.WeChatAPI = "http://127.0.0.1:1"
	wrongSecret := *cfg
	wrongSecret.AppSecret = "wrong"

	tests := []struct {
		name   string
		app    *config.App
		opts   func() adapters.Options
		before func()
		reason adapters.Reason
		code   string
	}{
		{"wrong secret", &wrongSecret, func() adapters.Options { return opts }, nil, adapters.ReasonAuth, "40125"},
		{"platform busy", cfg, func() adapters.Options { return opts }, func() {
			sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "stable_token", ErrCode: -1})
		}, adapters.ReasonBusy, "-1"},
		{"invalid credential is not a token to refresh", cfg, func() adapters.Options { return opts }, func() {
			sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "stable_token", ErrCode: 40001})
		}, adapters.ReasonAuth, "40001"},
		{"unreachable", cfg, func() adapters.Options { return closed }, nil, adapters.ReasonUnreachable, ""},
		{"timeout", cfg, func() adapters.Options {
			o := answering(200, `{"access_token":"x","expires_in":7200}`, time.Second)
			o.Timeout = 50 * time.Millisecond
			return o
		}, nil, adapters.ReasonTimeout, ""},
		{"HTTP 502", cfg, func() adapters.Options { return answering(502, "bad gateway", 0) }, nil, adapters.ReasonBadResponse, ""},
		{"not JSON", cfg, func() adapters.Options { return answering(200, "<html>", 0) }, nil, adapters.ReasonBadResponse, ""},
		{"no token", cfg, func() adapters.Options { return answering(200, `{"expires_in":7200}`, 0) }, nil, adapters.ReasonBadResponse, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			_, err := wechat.NewTokenFetcher(tt.app, tt.opts()).FetchAccessToken(ctx, false)
			wantPlatformError(t, err, tt.reason, tt.code)
			if strings.Contains(err.Error(), tt.app.AppSecret) {
				t.Fatalf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestNewRefusesASecondWeChatEndpoint(t *testing.T) {
	t.Parallel()
	_, _, cfg, opts := simApp(t, sandbox.AppSpec{})
	newClient(t, cfg, opts)
	other := opts
	other.Endpoints.WeChatAPI = "http://127.0.0.1:9/elsewhere"
	if _, err := wechat.New(cfg, other); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("New with a second endpoint: %v", err)
	}
	same := opts
	same.Endpoints.WeChatAPI += "/"
	if _, err := wechat.New(cfg, same); err != nil {
		t.Fatalf("New with the same endpoint again: %v", err)
	}
	if _, err := wechat.New(&config.App{ID: "x", AppID: "wx"}, opts); err == nil {
		t.Fatal("New without a secret")
	}
}
