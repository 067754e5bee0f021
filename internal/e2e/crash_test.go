package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// crashRun sizes a crash test.
type crashRun struct {
	// Rounds: each round is a burst with one kill -9 at a random moment
	// and a restart.
	Rounds int
	// Orders and Messages per app and round.
	Orders, Messages int
	// Burst is how long a round's sends take.
	Burst time.Duration
}

// TestCrash: minigate as a real process, killed with SIGKILL in the middle
// of a burst of payment notifications and message pushes, restarted on the
// same port while the simulator retries as the platforms do. Afterwards
// every callback is acknowledged and stored once, every order moved to paid
// exactly once, and the de-duplicating business backend got every event
// exactly once.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the crash test runs a real process for about a minute")
	}
	runCrash(t, crashRun{Rounds: 1, Orders: 6, Messages: 4, Burst: 3 * time.Second})
}

func runCrash(t *testing.T, run crashRun) {
	rcv := newEventReceiver(t)
	// A backend slow enough that deliveries are in flight when the kill
	// comes: the ones it answered before the process died are sent again
	// by their rescued jobs, and the backend de-duplicates them.
	rcv.delay.Store(int64(150 * time.Millisecond))
	dbURL := pgtest.NewURL(t)
	d := deploy(t, deploySpec{
		Apps: shops, DatabaseURL: dbURL, Events: rcv.config(), Redeliver: testSchedule,
		// Jobs the killed process was running (event deliveries among
		// them) are run again 5 s after they started, not 10 minutes.
		Extra: map[string]any{"jobs": map[string]string{"timeout": "5s", "rescue_after": "5s"}},
	})
	check := openDB(t, dbURL)
	d.start()

	var orders []order
	messages := 0
	for round := range run.Rounds {
		// The orders of this round, created while minigate is up.
		type send func() (*sandbox.Report, error)
		var sends []send
		for _, spec := range shops {
			a := d.Apps[spec.ID]
			for i := range run.Orders {
				o := createOrder(t, d.URL, processAPIKey, a.ID, payerOf(d.Sim, a, "payer"), int64(1000+i), fmt.Sprintf("r%d-%s-%d", round, spec.ID, i))
				orders = append(orders, o)
				sends = append(sends, func() (*sandbox.Report, error) {
					return d.Sim.Pay(context.Background(), a, o.OutTradeNo, sandbox.Faults{})
				})
			}
			for i := range run.Messages {
				messages++
				sends = append(sends, func() (*sandbox.Report, error) {
					return d.Sim.Push(context.Background(), a, fmt.Sprintf("user-%d", i%3), sandbox.PushRequest{Type: "text", Content: fmt.Sprintf("round %d message %d", round, i)})
				})
			}
		}
		rand.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })

		// The burst: sends at a steady pace over run.Burst, so that
		// callbacks are being stored and events delivered when the kill
		// comes, at a random moment in its middle 60%.
		killAfter := time.Duration(float64(run.Burst) * (0.2 + 0.6*rand.Float64()))
		killed := make(chan struct{})
		go func() {
			time.Sleep(killAfter)
			d.kill()
			close(killed)
		}()
		var wg sync.WaitGroup
		start, pace := time.Now(), run.Burst/time.Duration(len(sends))
		for i, s := range sends {
			time.Sleep(time.Until(start.Add(time.Duration(i) * pace)))
			wg.Go(func() {
				if _, err := s(); err != nil {
					t.Error(err)
				}
			})
		}
		<-killed
		t.Logf("round %d: killed %v into a %v burst of %d callbacks", round, killAfter.Round(time.Millisecond), run.Burst, len(sends))
		d.start()
		wg.Wait()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.Sim.WaitRedelivered(ctx, d.URL); err != nil {
		t.Fatal(err)
	}
	cbs := d.Sim.Callbacks(d.URL)
	failedFirst := 0
	for _, cb := range cbs {
		if !cb.Acked {
			t.Errorf("callback never acknowledged: %+v", cb.Attempts)
		}
		if !cb.Attempts[0].Acked {
			failedFirst++
		}
	}
	t.Logf("%d callbacks, %d needed the platform's retries", len(cbs), failedFirst)
	if want := len(orders) + messages; len(cbs) != want {
		t.Fatalf("%d callbacks sent, want %d", len(cbs), want)
	}
	// Every acknowledged callback is stored, once.
	if n := count(t, check, `SELECT count(*) FROM callbacks`); n != len(cbs) {
		t.Errorf("%d callbacks stored, %d acknowledged", n, len(cbs))
	}
	if n := count(t, check, `SELECT count(*) FROM messages WHERE direction = 'in'`); n != messages {
		t.Errorf("%d messages in the inbox, want %d", n, messages)
	}
	// Every order moved to paid exactly once.
	for _, o := range orders {
		if n := paidMoves(t, check, o.ID); n != 1 {
			t.Errorf("order %s moved to paid %d times", o.ID, n)
		}
	}
	// Every event reached the de-duplicating backend exactly once: one
	// order.paid per order, one message.received per message.
	rcv.waitFor(t, "order.paid", len(orders), 90*time.Second)
	rcv.waitFor(t, "message.received", messages, 90*time.Second)
	perOrder := map[string]int{}
	for _, ev := range rcv.received("order.paid") {
		perOrder[ev.dataString("order_id")]++
	}
	for _, o := range orders {
		if perOrder[o.ID] != 1 {
			t.Errorf("order %s: %d distinct order.paid events", o.ID, perOrder[o.ID])
		}
	}
	perMessage := map[string]int{}
	for _, ev := range rcv.received("message.received") {
		perMessage[ev.dataString("app")+"/"+ev.dataString("message", "platform_msg_id")]++
	}
	for k, n := range perMessage {
		if n != 1 {
			t.Errorf("message %s: %d distinct message.received events", k, n)
		}
	}
	if len(perMessage) != messages {
		t.Errorf("%d distinct messages reached the backend, want %d", len(perMessage), messages)
	}
	// A delivery the kill interrupted after the backend had answered is
	// recorded by its rescued job's repeated attempt (jobs.rescue_after
	// after it started, once the new process leads, plus the retry's
	// backoff): the backend sees it twice and keeps it once.
	testenv.Eventually(t, 90*time.Second, "every event marked delivered", func() bool {
		return count(t, check, `SELECT count(*) FROM events WHERE state <> 'delivered'`) == 0
	})
	distinct, repeated, forged := rcv.stats()
	if distinct != len(orders)+messages || forged != 0 {
		t.Errorf("backend got %d distinct events (want %d), %d badly signed", distinct, len(orders)+messages, forged)
	}
	t.Logf("backend: %d events, %d of them delivered more than once (de-duplicated by webhook-id)", distinct, repeated)
}
