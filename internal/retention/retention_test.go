package retention_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/internal/retention"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/sessions"
)

func count(t *testing.T, e *testenv.Env, query string) int {
	t.Helper()
	var n int
	if err := e.DB.Get(&n, query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func exec(t *testing.T, e *testenv.Env, query string) {
	t.Helper()
	if _, err := e.DB.Exec(query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func pruned(t *testing.T, table string) float64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.Pruned.WithLabelValues(table).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestPruneJob runs the wired hourly job once on an instance whose records
// span their retention: old callbacks, old finished events (with their
// attempts) and sessions that ended long ago go; recent ones, pending
// events of any age, users and their identities stay.
func TestPruneJob(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(backend.Close)
	e := testenv.Start(t, testenv.Spec{
		Apps:   []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}},
		Events: config.Events{URL: backend.URL, Secret: "retention-test-secret"},
	})
	sa := e.SandboxApp("wx")
	for i := range 4 {
		if _, err := e.Sandbox.Push(context.Background(), sa, "alice", sandbox.PushRequest{Type: "text", Content: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, "events delivered", func() bool {
		return count(t, e, `SELECT count(*) FROM events WHERE state = 'delivered'`) == 4
	})
	for _, name := range []string{"expired", "revoked", "active", "recently-expired"} {
		e.Login(t, "wx", name)
	}
	// Age the records past (or, for some, not quite past) their retention.
	exec(t, e, `UPDATE callbacks SET received_at = now() - interval '91 days' WHERE id IN (SELECT id FROM callbacks ORDER BY id LIMIT 2)`)
	exec(t, e, `UPDATE callbacks SET received_at = now() - interval '89 days' WHERE id = (SELECT max(id) FROM callbacks)`)
	exec(t, e, `UPDATE events SET created_at = now() - interval '91 days' WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 2)`)
	exec(t, e, `INSERT INTO events (id, type, data, state, created_at) VALUES ('evt_01AAAAAAAAAAAAAAAAAAAAAAAA', 'order.paid', '{}', 'pending', now() - interval '200 days')`)
	exec(t, e, `UPDATE sessions SET expires_at = now() - interval '31 days' WHERE user_id IN (SELECT user_id FROM identities WHERE openid = '`+e.Sandbox.User(sa, "expired").OpenID+`')`)
	exec(t, e, `UPDATE sessions SET revoked_at = now() - interval '31 days' WHERE user_id IN (SELECT user_id FROM identities WHERE openid = '`+e.Sandbox.User(sa, "revoked").OpenID+`')`)
	exec(t, e, `UPDATE sessions SET expires_at = now() - interval '29 days' WHERE user_id IN (SELECT user_id FROM identities WHERE openid = '`+e.Sandbox.User(sa, "recently-expired").OpenID+`')`)
	deliveries := count(t, e, `SELECT count(*) FROM event_deliveries`)
	before := map[string]float64{"callbacks": pruned(t, "callbacks"), "events": pruned(t, "events"), "sessions": pruned(t, "sessions")}

	done := count(t, e, `SELECT count(*) FROM river_job WHERE kind = 'retention.prune' AND state = 'completed'`)
	if _, err := e.Minigate.River.Insert(context.Background(), retention.PruneArgs{}, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the prune job", func() bool {
		return count(t, e, `SELECT count(*) FROM river_job WHERE kind = 'retention.prune' AND state = 'completed'`) > done
	})

	for _, c := range []struct {
		what  string
		query string
		want  int
	}{
		{"callbacks left", `SELECT count(*) FROM callbacks`, 2},
		{"events left", `SELECT count(*) FROM events`, 3},
		{"the old pending event", `SELECT count(*) FROM events WHERE state = 'pending'`, 1},
		{"delivery attempts left", `SELECT count(*) FROM event_deliveries`, deliveries - 2},
		{"sessions left", `SELECT count(*) FROM sessions`, 2},
		{"users left", `SELECT count(*) FROM users`, 4},
		{"identities left", `SELECT count(*) FROM identities`, 4},
		{"inbox left", `SELECT count(*) FROM messages`, 4},
	} {
		if got := count(t, e, c.query); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	for table, want := range map[string]float64{"callbacks": 2, "events": 2, "sessions": 2} {
		if got := pruned(t, table) - before[table]; got < want {
			t.Errorf("minigate_retention_pruned_total{table=%q} grew by %v, want at least %v", table, got, want)
		}
	}
}

// TestRunInBatches: a pass deletes batch after batch until nothing old is
// left, and a failing table does not stop the others.
func TestRunInBatches(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}}})
	for i := range 5 {
		e.Login(t, "wx", fmt.Sprint("user-", i))
	}
	exec(t, e, `UPDATE sessions SET expires_at = now() - interval '2 days'`)
	broken := errors.New("broken table")
	svc := retention.New([]retention.Table{
		{Name: "broken", Keep: time.Hour, Prune: func(context.Context, time.Time, int) (int64, error) { return 0, broken }},
		{Name: "sessions", Keep: 24 * time.Hour, Prune: func(ctx context.Context, before time.Time, batch int) (int64, error) {
			return sessions.PruneSessions(ctx, e.DB, before, batch)
		}},
		{Name: "events", Keep: 24 * time.Hour, Prune: func(ctx context.Context, before time.Time, batch int) (int64, error) {
			return events.Prune(ctx, e.DB, before, batch)
		}},
	}, retention.Options{Batch: 2})
	deleted, err := svc.Run(context.Background())
	if !errors.Is(err, broken) {
		t.Fatalf("Run error = %v, want the broken table's", err)
	}
	if deleted["sessions"] != 5 || deleted["events"] != 0 || count(t, e, `SELECT count(*) FROM sessions`) != 0 {
		t.Fatalf("deleted %v, %d sessions left; want all 5 in batches of 2", deleted, count(t, e, `SELECT count(*) FROM sessions`))
	}
}
