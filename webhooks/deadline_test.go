package webhooks

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/pgtest"
)

// blackholedPool is a pool whose server accepts connections and never
// answers (a blackholed address): every query blocks, whatever its context
// says, until connect_timeout.
func blackholedPool(t *testing.T) *sqlx.DB {
	t.Helper()
	c, err := db.Connector("postgres://minigate@" + pgtest.Blackhole(t) + "/minigate?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pool := sqlx.NewDb(sql.OpenDB(c), "postgres")
	t.Cleanup(func() { pool.Close() })
	return pool
}

// A database that does not answer at all must not hold the platform's
// connection: the pipeline answers within StoreTimeout (plus a little),
// 503 for a callback it could not store and the refusal for a forged one.
func TestPipelineAnswersInTimeWhenTheDatabaseHangs(t *testing.T) {
	t.Parallel()
	pool := blackholedPool(t)
	p := NewPipeline(pool, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, tc := range []struct {
		name   string
		body   string
		status int
	}{
		{"verified callback", `{"id":"m1"}`, http.StatusServiceUnavailable},
		{"forged callback", `{"id":"m2","forged":true}`, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			rep := Process(context.Background(), p, testSpec(), testRequest(tc.body))
			elapsed := time.Since(start)
			if rep.Status != tc.status || string(rep.Body) == "success" {
				t.Fatalf("answered %d %q, want %d and no acknowledgement", rep.Status, rep.Body, tc.status)
			}
			if elapsed > DefaultStoreTimeout+200*time.Millisecond {
				t.Fatalf("answered after %v, want within %v", elapsed, DefaultStoreTimeout)
			}
		})
	}
}
