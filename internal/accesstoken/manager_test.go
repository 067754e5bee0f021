package accesstoken_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/accesstoken"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/internal/seal"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// counting wraps a real adapter's fetcher and counts fetches at the platform.
type counting struct {
	next   accesstoken.Fetcher
	n      atomic.Int64
	forced atomic.Int64
}

func (c *counting) FetchAccessToken(ctx context.Context, force bool) (accesstoken.Token, error) {
	c.n.Add(1)
	if force {
		c.forced.Add(1)
	}
	return c.next.FetchAccessToken(ctx, force)
}

type fetcherCase struct {
	platform string
	fetcher  func(*config.App, adapters.Options) accesstoken.Fetcher
}

var fetcherCases = []fetcherCase{
	{sandbox.WeChat, wechat.NewTokenFetcher},
	{sandbox.QQ, qq.NewTokenFetcher},
}

// setup registers a fresh app of platform with the shared simulator and
// returns its config, the fetcher options and a fresh database's URL.
func setup(t *testing.T, fc fetcherCase, clk *testenv.Clock) (*config.App, adapters.Options, string) {
	t.Helper()
	sim, simURL := testenv.Simulator(t)
	sbApp, cfgApp, err := sandbox.NewAppPair(sandbox.AppSpec{
		ID: "tok-" + fc.platform + "-" + time.Now().Format("150405.000000000"), Platform: fc.platform, Key: testenv.Key,
	})
	if err != nil {
		t.Fatal(err)
	}
	sim.AddApp(sbApp)
	opts := adapters.Options{Endpoints: sandbox.Endpoints(simURL), Timeout: 5 * time.Second, Now: clk.Now}
	return cfgApp, opts, pgtest.NewURL(t)
}

// instance opens its own pool on dbURL, as another minigate instance would.
func instance(t *testing.T, dbURL string, clk *testenv.Clock) (*accesstoken.Manager, *sqlx.DB) {
	t.Helper()
	pool, err := db.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := accesstoken.NewManager(pool, accesstoken.Options{SecretKey: testSecretKey, Now: clk.Now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return m, pool
}

// testSecretKey is the secret_key the test managers seal tokens with.
const testSecretKey = "test-secret-key-0123456789abcdef0123456789"

// hammer calls f from n goroutines per source at once and returns the
// results; it fails the test on any error.
func hammer(t *testing.T, sources []adapters.TokenSource, n int, f func(adapters.TokenSource) (string, error)) []string {
	t.Helper()
	var (
		mu   sync.Mutex
		out  []string
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for _, s := range sources {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok, err := f(s)
				mu.Lock()
				defer mu.Unlock()
				out, errs = append(out, tok), append(errs, err)
			}()
		}
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func allEqual(toks []string) bool {
	for _, t := range toks {
		if t != toks[0] {
			return false
		}
	}
	return len(toks) > 0 && toks[0] != ""
}

// TestTwoManagersRefreshOnce: two instances (managers with their own pools
// on one database), each with many concurrent callers, fetch a token once;
// a token reported invalid by all of them is refreshed once more, with
// force; and a token near its expiry is renewed once.
func TestTwoManagersRefreshOnce(t *testing.T) {
	t.Parallel()
	for _, fc := range fetcherCases {
		t.Run(fc.platform, func(t *testing.T) {
			t.Parallel()
			clk := &testenv.Clock{}
			app, opts, dbURL := setup(t, fc, clk)
			m1, pool := instance(t, dbURL, clk)
			m2, _ := instance(t, dbURL, clk)
			f1 := &counting{next: fc.fetcher(app, opts)}
			f2 := &counting{next: fc.fetcher(app, opts)}
			sources := []adapters.TokenSource{m1.Source(app.ID, f1), m2.Source(app.ID, f2)}
			fetches := func() int64 { return f1.n.Load() + f2.n.Load() }
			ctx := context.Background()

			first := hammer(t, sources, 10, func(s adapters.TokenSource) (string, error) { return s.Token(ctx) })
			if !allEqual(first) || fetches() != 1 {
				t.Fatalf("first tokens: %d fetches, all equal %v; want 1 fetch", fetches(), allEqual(first))
			}

			stale := first[0]
			refreshed := hammer(t, sources, 5, func(s adapters.TokenSource) (string, error) { return s.Refresh(ctx, stale) })
			if !allEqual(refreshed) || refreshed[0] == stale || fetches() != 2 || f1.forced.Load()+f2.forced.Load() != 1 {
				t.Fatalf("after refresh: %d fetches (%d forced), new token %v; want 2 fetches, 1 forced, one new token",
					fetches(), f1.forced.Load()+f2.forced.Load(), refreshed[0] != stale)
			}
			for _, s := range sources {
				if tok, err := s.Token(ctx); err != nil || tok != refreshed[0] {
					t.Fatalf("Token after refresh = %q, %v", tok, err)
				}
			}

			// Close to expiry (by minigate's clock), the next callers renew
			// it once. (The simulator keeps real time, so WeChat may hand
			// back the same token with a later expiry by minigate's clock.)
			clk.Advance(2*time.Hour - accesstoken.DefaultMargin + time.Minute)
			renewed := hammer(t, sources, 5, func(s adapters.TokenSource) (string, error) { return s.Token(ctx) })
			if !allEqual(renewed) || fetches() != 3 {
				t.Fatalf("near expiry: %d fetches; want 3", fetches())
			}
			var stored struct {
				Sealed     []byte    `db:"token_sealed"`
				ExpiresAt  time.Time `db:"expires_at"`
				FetchCount int       `db:"fetch_count"`
			}
			if err := pool.Get(&stored, `SELECT token_sealed, expires_at, fetch_count FROM access_tokens WHERE app = $1`, app.ID); err != nil {
				t.Fatal(err)
			}
			// Sealed at rest: not the token, and it opens only for this app.
			sealer, err := seal.New(testSecretKey, accesstoken.SealPurpose)
			if err != nil {
				t.Fatal(err)
			}
			opened, err := sealer.Open(stored.Sealed, []byte(app.ID))
			if err != nil || string(opened) != renewed[0] || bytes.Contains(stored.Sealed, []byte(renewed[0])) {
				t.Fatalf("stored token: opens to the current one %v (%v), plaintext inside %v",
					string(opened) == renewed[0], err, bytes.Contains(stored.Sealed, []byte(renewed[0])))
			}
			if _, err := sealer.Open(stored.Sealed, []byte("another-app")); err == nil {
				t.Fatal("the sealed token opens for another app")
			}
			if stored.FetchCount != 3 || stored.ExpiresAt.Sub(clk.Now()) < time.Hour {
				t.Fatalf("stored %d fetches, expires in %v", stored.FetchCount, stored.ExpiresAt.Sub(clk.Now()))
			}
		})
	}
}

// TestFetchFailure: a platform error reaches the caller as a
// *adapters.PlatformError, stores nothing, and the next call tries again.
func TestFetchFailure(t *testing.T) {
	t.Parallel()
	clk := &testenv.Clock{}
	sim, _ := testenv.Simulator(t)
	app, opts, dbURL := setup(t, fetcherCases[0], clk)
	m, pool := instance(t, dbURL, clk)
	f := &counting{next: wechat.NewTokenFetcher(app, opts)}
	src := m.Source(app.ID, f)
	ctx := context.Background()

	sim.FailWeChat(app.ID, sandbox.WeChatError{API: "stable_token", ErrCode: -1, ErrMsg: "system error"})
	_, err := src.Token(ctx)
	if !adapters.HasReason(err, adapters.ReasonBusy) {
		t.Fatalf("Token = %v, want a platform_busy PlatformError", err)
	}
	var rows int
	if err := pool.Get(&rows, `SELECT count(*) FROM access_tokens WHERE token_sealed IS NOT NULL`); err != nil || rows != 0 {
		t.Fatalf("stored tokens after a failure: %d, %v", rows, err)
	}
	tok, err := src.Token(ctx)
	if err != nil || tok == "" || f.n.Load() != 2 {
		t.Fatalf("Token after the failure = %q, %v (%d fetches)", tok, err, f.n.Load())
	}
}

// TestTokenRespectsContext: a caller waiting for another caller's refresh
// gives up when its context ends.
func TestTokenRespectsContext(t *testing.T) {
	t.Parallel()
	clk := &testenv.Clock{}
	app, opts, dbURL := setup(t, fetcherCases[0], clk)
	m, _ := instance(t, dbURL, clk)
	release := make(chan struct{})
	entered := make(chan struct{})
	src := m.Source(app.ID, blocking{next: wechat.NewTokenFetcher(app, opts), entered: entered, release: release})
	done := make(chan error, 1)
	go func() {
		_, err := src.Token(context.Background())
		done <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := src.Token(ctx); err == nil || ctx.Err() == nil {
		t.Fatalf("waiting Token = %v, want the context's error", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// blocking holds a real fetch until released.
type blocking struct {
	next    accesstoken.Fetcher
	entered chan struct{}
	release chan struct{}
}

func (b blocking) FetchAccessToken(ctx context.Context, force bool) (accesstoken.Token, error) {
	close(b.entered)
	<-b.release
	return b.next.FetchAccessToken(ctx, force)
}
