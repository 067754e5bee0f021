package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
)

// balancer spreads requests over several minigate instances in turn, as a
// load balancer in front of a deployment does; the platforms call it.
type balancer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	backends []*httputil.ReverseProxy
	next     atomic.Int64
	served   []atomic.Int64
}

func newBalancer(t *testing.T) *balancer {
	b := &balancer{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		backends := b.backends
		b.mu.Unlock()
		i := int(b.next.Add(1)) % len(backends)
		b.served[i].Add(1)
		backends[i].ServeHTTP(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *balancer) use(t *testing.T, urls ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.served = make([]atomic.Int64, len(urls))
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		b.backends = append(b.backends, httputil.NewSingleHostReverseProxy(u))
	}
}

// TestTwoInstances runs two minigate instances on one database behind a
// balancer the platforms call, and checks that what must happen once
// happens once: de-duplication of a callback delivered to both, a state
// move driven from both, an access-token refresh needed by both, recovery
// sweeps running on both, and the delivery of every event.
func TestTwoInstances(t *testing.T) {
	rcv := newEventReceiver(t)
	lb := newBalancer(t)
	publicURL := func(c *config.Config) { c.PublicURL = lb.srv.URL }
	a := testenv.Start(t, testenv.Spec{Apps: shops, Events: rcv.config(), Configure: publicURL})
	b := testenv.Start(t, testenv.Spec{DatabaseURL: a.DBURL, Events: rcv.config(), Configure: func(c *config.Config) {
		c.Apps = a.Config.Apps
		publicURL(c)
	}})
	lb.use(t, a.URL, b.URL)
	sb := a.Sandbox
	for _, spec := range shops { // the platforms push messages through the balancer too
		cp := *a.SandboxApp(spec.ID)
		cp.CallbackURL = lb.srv.URL + "/callbacks/" + cp.ID
		sb.AddApp(&cp)
	}
	instances := []*testenv.Env{a, b}
	var events int // events the backend must get, once each

	t.Run("a callback delivered to both instances is stored once", func(t *testing.T) {
		for _, spec := range shops {
			app := a.SandboxApp(spec.ID)
			o := createOrder(t, a.URL, testenv.APIKey, app.ID, payerOf(sb, app, "dup"), 300, "dup-"+spec.ID)
			before := [2]int64{lb.served[0].Load(), lb.served[1].Load()}
			rep, err := sb.Pay(context.Background(), app, o.OutTradeNo, sandbox.Faults{Duplicates: 19})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range rep.Deliveries {
				if !d.Acked {
					t.Errorf("%s: copy answered %d %q", spec.ID, d.Status, d.Body)
				}
			}
			if lb.served[0].Load() == before[0] || lb.served[1].Load() == before[1] {
				t.Fatalf("the copies did not reach both instances")
			}
			if n := paidMoves(t, a.DB, o.ID); n != 1 {
				t.Errorf("%s: order moved to paid %d times", spec.ID, n)
			}
			push, err := sb.Push(context.Background(), app, "dup", sandbox.PushRequest{Type: "text", Content: "once", Faults: sandbox.Faults{Duplicates: 19}})
			if err != nil {
				t.Fatal(err)
			}
			if len(push.Deliveries) != 20 {
				t.Fatalf("%d pushes", len(push.Deliveries))
			}
			events += 2
		}
		if n := count(t, a.DB, `SELECT count(*) FROM messages WHERE direction = 'in' AND content = 'once'`); n != len(shops) {
			t.Errorf("%d inbox rows for %d pushed messages", n, len(shops))
		}
	})

	t.Run("a state move driven from both instances happens once", func(t *testing.T) {
		for _, spec := range shops {
			app := a.SandboxApp(spec.ID)
			o := createOrder(t, b.URL, testenv.APIKey, app.ID, payerOf(sb, app, "sync"), 400, "sync-"+spec.ID)
			// The user pays; the notification is lost; both instances
			// are asked to sync at once, five times each.
			if _, err := sb.Pay(context.Background(), app, o.OutTradeNo, sandbox.Faults{Drop: true}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Go(func() {
					r := instances[i%2].Do(http.MethodPost, "/v1/orders/"+o.ID+"/sync", nil, testenv.Operator())
					if r.Status != http.StatusOK {
						t.Errorf("%s: sync: %d %s", spec.ID, r.Status, r.Body)
					}
				})
			}
			wg.Wait()
			if n := paidMoves(t, a.DB, o.ID); n != 1 {
				t.Errorf("%s: order moved to paid %d times", spec.ID, n)
			}
			events++
		}
	})

	t.Run("an access token needed by both instances is refreshed once", func(t *testing.T) {
		app := a.App("wx").ID
		var tokens []*testenv.Env
		var sessions []string
		for i := range 6 {
			e := instances[i%2]
			r := e.Do(http.MethodPost, "/v1/apps/"+app+"/sessions", map[string]any{"code": a.MintCode("wx", fmt.Sprintf("phone-%d", i))})
			r.Expect(t, http.StatusCreated, "login", nil)
			var out struct {
				Token string `json:"token"`
			}
			r.Decode(t, &out)
			tokens, sessions = append(tokens, e), append(sessions, out.Token)
		}
		phones := func() {
			var wg sync.WaitGroup
			for i, e := range tokens {
				code, err := sb.MintCode(app, fmt.Sprintf("phone-%d", i), "phone")
				if err != nil {
					t.Fatal(err)
				}
				wg.Go(func() {
					if r := e.Do(http.MethodPost, "/v1/me/phone", map[string]any{"code": code}, testenv.Bearer(sessions[i])); r.Status != http.StatusOK {
						t.Errorf("phone: %d %s", r.Status, r.Body)
					}
				})
			}
			wg.Wait()
		}
		phones()
		if st := sb.WeChatTokenStats(app); st.Issued != 1 {
			t.Errorf("first use by both instances: %+v, want one token issued", st)
		}
		// The platform invalidates the token: both instances find out and
		// one of them refreshes it.
		sb.InvalidateWeChatTokens(app)
		phones()
		if st := sb.WeChatTokenStats(app); st.Issued != 2 || st.ForceRefreshes != 1 {
			t.Errorf("after invalidation: %+v, want one more token, by one forced refresh", st)
		}
	})

	t.Run("recovery sweeps on both instances recover each order once", func(t *testing.T) {
		var lost []order
		for _, spec := range shops {
			app := a.SandboxApp(spec.ID)
			for i := range 3 {
				o := createOrder(t, a.URL, testenv.APIKey, app.ID, payerOf(sb, app, "sweep"), 500, fmt.Sprintf("sweep-%s-%d", spec.ID, i))
				if _, err := sb.Pay(context.Background(), app, o.OutTradeNo, sandbox.Faults{Drop: true}); err != nil {
					t.Fatal(err)
				}
				lost = append(lost, o)
			}
		}
		// Make their checks due, then run a sweep on each instance at once.
		if _, err := a.DB.Exec(`UPDATE orders SET next_check_at = now() - interval '1 second' WHERE status IN ('created', 'paying')`); err != nil {
			t.Fatal(err)
		}
		var before int
		before = count(t, a.DB, `SELECT count(*) FROM river_job WHERE kind = 'orders.sweep' AND state = 'completed'`)
		for _, e := range instances {
			if _, err := e.Minigate.River.Insert(context.Background(), orders.SweepArgs{}, nil); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 30*time.Second, "both sweeps", func() bool {
			return count(t, a.DB, `SELECT count(*) FROM river_job WHERE kind = 'orders.sweep' AND state = 'completed'`) >= before+2
		})
		for _, o := range lost {
			if n := paidMoves(t, a.DB, o.ID); n != 1 {
				t.Errorf("order %s moved to paid %d times", o.ID, n)
			}
		}
		events += len(lost)
	})

	t.Run("the state-move counters agree", func(t *testing.T) {
		// Both instances count into one registry (one process): each
		// payment was moved once, by one of them.
		for _, spec := range shops {
			app := a.App(spec.ID).ID
			for source, want := range map[string]float64{"notify": 1, "query": 4} {
				if got := counterValue(t, metrics.OrderMoves.WithLabelValues(app, "paying", "paid", source)); got != want {
					t.Errorf("%s: minigate_order_state_moves_total{to=paid,source=%s} = %v, want %v", spec.ID, source, got, want)
				}
			}
		}
	})

	t.Run("every event is delivered once", func(t *testing.T) {
		rcv.waitFor(t, "", events, 30*time.Second)
		// Give a duplicate delivery the time to show up.
		time.Sleep(time.Second)
		distinct, repeated, forged := rcv.stats()
		if distinct != events || repeated != 0 || forged != 0 {
			t.Errorf("backend: %d distinct events (want %d), %d delivered more than once, %d badly signed", distinct, events, repeated, forged)
		}
		if n := count(t, a.DB, `SELECT count(*) FROM event_deliveries`); n != events {
			t.Errorf("%d delivery attempts recorded for %d events", n, events)
		}
	})
}
