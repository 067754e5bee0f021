package db_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/pgtest"
)

func TestBounded(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		fn      func(ctx context.Context) (int, error)
		want    int
		wantErr error
		maxWait time.Duration
	}{
		{"returns fn's value", func(context.Context) (int, error) { return 7, nil }, 7, nil, 50 * time.Millisecond},
		{"returns fn's error", func(context.Context) (int, error) { return 0, boom }, 0, boom, 50 * time.Millisecond},
		{"fn that honours its context", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		}, 0, context.DeadlineExceeded, 300 * time.Millisecond},
		{"gives up on fn that ignores its context", func(context.Context) (int, error) {
			time.Sleep(2 * time.Second) // a read on a blackholed connection
			return 1, nil
		}, 0, db.ErrGaveUp, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			got, err := db.Bounded(context.Background(), 100*time.Millisecond, tc.fn)
			if elapsed := time.Since(start); elapsed > tc.maxWait {
				t.Fatalf("returned after %v, want within %v", elapsed, tc.maxWait)
			}
			if got != tc.want || !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %d, %v; want %d, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestConnectTimeoutDefault(t *testing.T) {
	t.Parallel()
	addr := pgtest.Blackhole(t)
	for _, tc := range []struct {
		name     string
		url      string
		min, max time.Duration
	}{
		{"default", "postgres://u@" + addr + "/x?sslmode=disable", db.DefaultConnectTimeout - 500*time.Millisecond, db.DefaultConnectTimeout + 2*time.Second},
		{"the URL's own", "postgres://u@" + addr + "/x?sslmode=disable&connect_timeout=1", 500 * time.Millisecond, 2500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := db.Connector(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			conn, err := c.Connect(context.Background()) // no deadline: only connect_timeout ends it
			elapsed := time.Since(start)
			if err == nil {
				conn.Close()
				t.Fatal("connected to a server that never answers")
			}
			if elapsed < tc.min || elapsed > tc.max {
				t.Fatalf("gave up after %v, want between %v and %v (err %v)", elapsed, tc.min, tc.max, err)
			}
		})
	}
}

func TestIdleInTransactionTimeout(t *testing.T) {
	t.Parallel()
	u := pgtest.NewURL(t)
	for _, tc := range []struct {
		name, url, want string
	}{
		{"default", u, "1min"},
		{"the URL's own", u + "&idle_in_transaction_session_timeout=0", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool, err := db.Open(context.Background(), tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			var got string
			if err := pool.Get(&got, `SHOW idle_in_transaction_session_timeout`); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("idle_in_transaction_session_timeout = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConnectorRejectsBadURL(t *testing.T) {
	t.Parallel()
	if _, err := db.Connector("postgres://u@host/db?connect_timeout=soon"); err == nil || !strings.HasPrefix(err.Error(), "db: ") {
		t.Fatalf("bad connect_timeout: %v", err)
	}
}
