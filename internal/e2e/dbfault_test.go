package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// shops are the apps the resilience tests run on: one per platform, each
// with message push and a merchant account.
var shops = []sandbox.AppSpec{
	{ID: "wx", Platform: sandbox.WeChat, Pay: true},
	{ID: "qq", Platform: sandbox.QQ, Pay: true},
	{ID: "ali", Platform: sandbox.Alipay, Pay: true},
}

// TestDatabaseFaults: with Postgres stopped or blackholed, every callback
// is answered 5xx within a second (so the platform retries) and none is
// acknowledged; /readyz fails. Once the database is back, the platforms'
// retries drain the backlog: every order is paid once, every message
// stored once, every event delivered once.
func TestDatabaseFaults(t *testing.T) {
	runDatabaseFaults(t, dbFaultRun{Orders: 3, Messages: 2, Outage: time.Second})
}

// dbFaultRun sizes a database-fault test.
type dbFaultRun struct {
	// Orders and Messages per app sent during the outage.
	Orders, Messages int
	// Outage is how long the database stays away after the burst.
	Outage time.Duration
}

// runDatabaseFaults runs run with the database stopped and, at the same
// time on another instance, blackholed. Not parallel with other tests: it
// turns on redelivery in the simulator they share.
func runDatabaseFaults(t *testing.T, run dbFaultRun) {
	sb, _ := testenv.Simulator(t)
	sb.SetRedelivery(testSchedule)
	t.Cleanup(func() { sb.SetRedelivery(nil) })
	for _, mode := range []string{"stopped", "blackholed"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testDatabaseFault(t, mode, run)
		})
	}
}

func testDatabaseFault(t *testing.T, mode string, run dbFaultRun) {
	realURL := pgtest.NewURL(t)
	proxy := newPGProxy(t, hostOf(t, realURL))
	rcv := newEventReceiver(t)
	e := testenv.Start(t, testenv.Spec{Apps: shops, Events: rcv.config(), DatabaseURL: proxy.databaseURL(t, realURL)})
	check := openDB(t, realURL) // the test's own view, around the proxy
	sb := e.Sandbox

	type paid struct {
		app   *sandbox.App
		order order
	}
	var orders []paid
	for _, spec := range shops {
		a := e.SandboxApp(spec.ID)
		for i := range run.Orders {
			o := createOrder(t, e.URL, testenv.APIKey, a.ID, payerOf(sb, a, "payer"), int64(100+i), fmt.Sprintf("%s-%d", spec.ID, i))
			orders = append(orders, paid{a, o})
		}
	}
	if s, _ := get(e.URL+"/readyz", 3*time.Second); s != http.StatusOK {
		t.Fatalf("readyz before the fault: %d", s)
	}

	switch mode {
	case "stopped":
		proxy.Stop()
	case "blackholed":
		proxy.Blackhole()
	}
	// The burst: every order paid, run.Messages messages per app, concurrently.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first []sandbox.Delivery
	record := func(rep *sandbox.Report, err error) {
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		first = append(first, rep.Deliveries...)
		mu.Unlock()
	}
	for _, p := range orders {
		wg.Go(func() { record(sb.Pay(context.Background(), p.app, p.order.OutTradeNo, sandbox.Faults{})) })
	}
	for _, spec := range shops {
		a := e.SandboxApp(spec.ID)
		for i := range run.Messages {
			wg.Go(func() {
				record(sb.Push(context.Background(), a, "writer", sandbox.PushRequest{Type: "text", Content: fmt.Sprintf("hello %d", i)}))
			})
		}
	}
	wg.Wait()
	messages := run.Messages * len(shops)
	if len(first) != len(orders)+messages {
		t.Fatalf("%d first deliveries, want %d", len(first), len(orders)+messages)
	}
	slowest := int64(0)
	for _, d := range first {
		slowest = max(slowest, d.DurationMS)
		if d.Acked || d.Status < 500 {
			t.Errorf("database %s: callback answered %d %q (acked %v), want 5xx", mode, d.Status, d.Body, d.Acked)
		}
		if d.DurationMS > 1000 {
			t.Errorf("database %s: callback answered after %d ms, want within 1 s", mode, d.DurationMS)
		}
	}
	t.Logf("database %s: %d callbacks answered 5xx, the slowest after %d ms", mode, len(first), slowest)
	status, took := get(e.URL+"/readyz", 5*time.Second)
	if status != http.StatusServiceUnavailable || took > 2500*time.Millisecond {
		t.Errorf("readyz with the database %s: %d after %v, want 503 within 2.5 s", mode, status, took)
	}
	if n := count(t, check, `SELECT count(*) FROM callbacks`); n != 0 {
		t.Fatalf("%d callbacks stored while the database was %s", n, mode)
	}

	// Let some retries fail too, then bring the database back.
	time.Sleep(run.Outage)
	proxy.Restore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sb.WaitRedelivered(ctx, e.URL); err != nil {
		t.Fatal(err)
	}
	cbs := sb.Callbacks(e.URL)
	retried := 0
	for _, cb := range cbs {
		if !cb.Acked {
			t.Errorf("callback to %s never acknowledged after recovery: %+v", cb.URL, cb.Attempts)
		}
		if len(cb.Attempts) > 2 {
			retried++
		}
	}
	if len(cbs) != len(first) || retried == 0 {
		t.Fatalf("%d callbacks recorded (%d retried more than once), want %d", len(cbs), retried, len(first))
	}
	for _, p := range orders {
		if n := paidMoves(t, check, p.order.ID); n != 1 {
			t.Errorf("order %s moved to paid %d times", p.order.ID, n)
		}
	}
	if n := count(t, check, `SELECT count(*) FROM messages WHERE direction = 'in'`); n != messages {
		t.Errorf("%d messages in the inbox, want %d", n, messages)
	}
	if n := count(t, check, `SELECT count(*) FROM callbacks`); n != len(first) {
		t.Errorf("%d callbacks stored, want %d", n, len(first))
	}
	rcv.waitFor(t, "order.paid", len(orders), 30*time.Second)
	rcv.waitFor(t, "message.received", messages, 30*time.Second)
	perOrder := map[string]int{}
	for _, ev := range rcv.received("order.paid") {
		perOrder[ev.dataString("order_id")]++
	}
	for _, p := range orders {
		if perOrder[p.order.ID] != 1 {
			t.Errorf("order %s: %d order.paid events", p.order.ID, perOrder[p.order.ID])
		}
	}
	if distinct, _, forged := rcv.stats(); distinct != len(orders)+messages || forged != 0 {
		t.Errorf("receiver: %d distinct events (want %d), %d badly signed", distinct, len(orders)+messages, forged)
	}
	if s, _ := get(e.URL+"/readyz", 3*time.Second); s != http.StatusOK {
		t.Errorf("readyz after recovery: %d", s)
	}
}
