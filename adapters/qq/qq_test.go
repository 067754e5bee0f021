package qq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// env is one QQ app registered with the shared simulator.
type env struct {
	sim  *sandbox.Sandbox
	sb   *sandbox.App
	cfg  *config.App
	opts adapters.Options
}

// setup registers a fresh QQ app (with a QQ wallet merchant) in the
// process's simulator and returns the adapter options that reach it.
func setup(t *testing.T, scope string) *env {
	t.Helper()
	sim, base := testenv.Simulator(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	sb, cfg, err := sandbox.NewAppPair(sandbox.AppSpec{
		ID: "qq-" + hex.EncodeToString(b), Platform: sandbox.QQ, UnionScope: scope,
		Pay: true, Key: testenv.Key,
	})
	if err != nil {
		t.Fatal(err)
	}
	sim.AddApp(sb)
	return &env{sim: sim, sb: sb, cfg: cfg, opts: adapters.Options{
		Endpoints: sandbox.Endpoints(base), Timeout: 5 * time.Second,
	}}
}

func (e *env) client(t *testing.T) *qq.Client {
	t.Helper()
	c, err := qq.New(e.cfg, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) code(t *testing.T, user string) string {
	t.Helper()
	code, err := e.sim.MintCode(e.cfg.ID, user, "login")
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// wantPlatformError fails unless err is a PlatformError with reason and code.
func wantPlatformError(t *testing.T, err error, platform string, reason adapters.Reason, code string) *adapters.PlatformError {
	t.Helper()
	pe, ok := adapters.AsPlatformError(err)
	if !ok {
		t.Fatalf("err = %v (%T), want a PlatformError", err, err)
	}
	if pe.Platform != platform || pe.Reason != reason || (code != "" && pe.Code != code) {
		t.Fatalf("err = %+v, want platform %s reason %s code %q", pe, platform, reason, code)
	}
	return pe
}

func TestCode2Session(t *testing.T) {
	t.Parallel()
	e := setup(t, "brand")
	c := e.client(t)
	ctx := context.Background()

	code := e.code(t, "alice")
	login, err := c.Code2Session(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	alice := e.sim.User(e.sb, "alice")
	if login.OpenID != alice.OpenID || login.UnionID != alice.UnionID || alice.UnionID == "" {
		t.Fatalf("login = %+v, want openid %s unionid %s", login, alice.OpenID, alice.UnionID)
	}
	if len(login.SessionKey) != 24 {
		t.Fatalf("session_key %q is not 16 bytes in base64", login.SessionKey)
	}

	t.Run("code used twice", func(t *testing.T) {
		_, err := c.Code2Session(ctx, code)
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonInvalidCode, "40163")
	})
	t.Run("unknown code", func(t *testing.T) {
		_, err := c.Code2Session(ctx, "not-a-code")
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonInvalidCode, "40029")
	})
	t.Run("empty code", func(t *testing.T) {
		_, err := c.Code2Session(ctx, "")
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonInvalidCode, "")
	})
	t.Run("wrong secret", func(t *testing.T) {
		cfg := *e.cfg
		cfg.AppSecret = "wrong"
		bad, err := qq.New(&cfg, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = bad.Code2Session(ctx, e.code(t, "alice"))
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonAuth, "40001")
	})
}

func TestCode2SessionWithoutUnionScope(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	login, err := e.client(t).Code2Session(context.Background(), e.code(t, "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if login.UnionID != "" || login.OpenID != e.sim.User(e.sb, "bob").OpenID {
		t.Fatalf("login = %+v", login)
	}
}

// TestCode2SessionPlatformErrors drives each documented failure through
// the simulator and checks the reason minigate's API maps from it.
func TestCode2SessionPlatformErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		errcode int
		reason  adapters.Reason
	}{
		{45011, adapters.ReasonRateLimited},
		{-1, adapters.ReasonBusy},
		{40226, adapters.ReasonHighRisk},
		{40029, adapters.ReasonInvalidCode},
		{99999, adapters.ReasonRejected},
	}
	e := setup(t, "")
	c := e.client(t)
	for _, tt := range tests {
		e.sim.FailQQ(e.cfg.ID, sandbox.QQError{API: "jscode2session", ErrCode: tt.errcode, ErrMsg: "injected"})
		_, err := c.Code2Session(context.Background(), e.code(t, "carol"))
		pe := wantPlatformError(t, err, qq.PlatformQQ, tt.reason, "")
		if pe.Code != strconv.Itoa(tt.errcode) || pe.Message != "injected" {
			t.Errorf("errcode %d: code %q message %q", tt.errcode, pe.Code, pe.Message)
		}
	}
}

func TestPhoneNumberUnsupported(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	_, err := e.client(t).PhoneNumber(context.Background(), "code")
	var ue *adapters.UnsupportedError
	if !errors.As(err, &ue) || ue.Platform != qq.PlatformQQ {
		t.Fatalf("err = %v, want an UnsupportedError for qq", err)
	}
}

func TestNewRequiresCredentials(t *testing.T) {
	t.Parallel()
	if _, err := qq.New(&config.App{ID: "x", AppID: "1"}, adapters.Options{}); err == nil {
		t.Fatal("New accepted an app without a secret")
	}
}

func TestFetchAccessToken(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	opts := e.opts
	opts.Now = func() time.Time { return now }
	f := qq.NewTokenFetcher(e.cfg, opts)
	ctx := context.Background()

	first, err := f.FetchAccessToken(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if first.Value == "" || !first.ExpiresAt.Equal(now.Add(7200*time.Second)) {
		t.Fatalf("token = %+v, want a value expiring at %v", first, now.Add(7200*time.Second))
	}
	second, err := f.FetchAccessToken(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if second.Value == first.Value {
		t.Fatal("a second fetch returned the same token")
	}

	t.Run("busy", func(t *testing.T) {
		e.sim.FailQQ(e.cfg.ID, sandbox.QQError{API: "getToken", ErrCode: -1, ErrMsg: "system busy"})
		_, err := f.FetchAccessToken(ctx, false)
		pe := wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonBusy, "-1")
		if !pe.Retryable() {
			t.Fatal("busy is not retryable")
		}
	})
	t.Run("wrong secret", func(t *testing.T) {
		cfg := *e.cfg
		cfg.AppSecret = "wrong"
		_, err := qq.NewTokenFetcher(&cfg, opts).FetchAccessToken(ctx, false)
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonAuth, "40001")
	})
	t.Run("unknown appid", func(t *testing.T) {
		cfg := *e.cfg
		cfg.AppID = "1100000000"
		_, err := qq.NewTokenFetcher(&cfg, opts).FetchAccessToken(ctx, false)
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonAuth, "40013")
	})
	t.Run("unreachable", func(t *testing.T) {
		o := opts
		o.Endpoints.QQAPI = "http://127.0.0.1:1"
		_, err := qq.NewTokenFetcher(e.cfg, o).FetchAccessToken(ctx, false)
		wantPlatformError(t, err, qq.PlatformQQ, adapters.ReasonUnreachable, "")
	})
}
