package reconcile_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

// End to end through the simulator: minigate's API, the platforms' bills,
// the books in Postgres.

// shop is a running instance with one app and a logged-in user.
type shop struct {
	e        *testenv.Env
	platform string
	app      string
	userID   string
}

func startShop(t *testing.T, platform string) *shop {
	t.Helper()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "shop", Platform: platform, Pay: true}}})
	return &shop{e: e, platform: platform, app: e.App("shop").ID, userID: e.Login(t, "shop", "alice").UserID}
}

type orderView struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	OutTradeNo  string `json:"out_trade_no"`
	NeedsReview bool   `json:"needs_review"`
	Events      []struct {
		Kind   string `json:"kind"`
		From   string `json:"from_status"`
		To     string `json:"to_status"`
		Source string `json:"source"`
	} `json:"events"`
	Refunds []struct {
		Status      string `json:"status"`
		OutRefundNo string `json:"out_refund_no"`
	} `json:"refunds"`
}

var keys atomic.Int64

func (s *shop) order(t *testing.T, amount int64) orderView {
	t.Helper()
	r := s.e.Do("POST", "/v1/apps/"+s.app+"/orders",
		map[string]any{"user_id": s.userID, "amount": amount, "description": "对账测试 " + t.Name()},
		testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, fmt.Sprintf("rk-%d", keys.Add(1))))
	var o orderView
	r.Expect(t, http.StatusCreated, "create order", &o)
	return o
}

func (s *shop) get(t *testing.T, id string) orderView {
	t.Helper()
	r := s.e.Do("GET", "/v1/orders/"+id, nil, testenv.Operator())
	var o orderView
	r.Expect(t, http.StatusOK, "get order", &o)
	return o
}

// pays has the user pay at the platform; with drop the notification is
// lost.
func (s *shop) pays(t *testing.T, o orderView, drop bool) {
	t.Helper()
	rep, err := s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp("shop"), o.OutTradeNo, sandbox.Faults{Drop: drop})
	if err != nil {
		t.Fatal(err)
	}
	// A 503 means minigate could not store the notification in time (a
	// loaded machine): the platform sends it again, and so does this.
	for try := 0; !drop && rep.Deliveries[0].Status == http.StatusServiceUnavailable && try < 10; try++ {
		time.Sleep(100 * time.Millisecond)
		if rep, err = s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp("shop"), o.OutTradeNo, sandbox.Faults{}); err != nil {
			t.Fatal(err)
		}
	}
	if drop {
		return
	}
	if d := rep.Deliveries[0]; d.Status != http.StatusOK && d.Status != http.StatusNoContent {
		t.Fatalf("notification answered %d %s", d.Status, d.Body)
	}
	testenv.Eventually(t, 10*time.Second, o.ID+" paid", func() bool { return s.get(t, o.ID).Status == "paid" })
}

// refunds refunds amount of o and waits until the refund succeeded (QQ
// wallet sends no refund notification: the order is synced).
func (s *shop) refunds(t *testing.T, o orderView, amount int64) {
	t.Helper()
	r := s.e.Do("POST", "/v1/orders/"+o.ID+"/refunds", map[string]any{"amount": amount, "reason": "少了一杯"},
		testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, fmt.Sprintf("rf-%d", keys.Add(1))))
	if r.Status != http.StatusCreated && r.Status != http.StatusAccepted {
		t.Fatalf("refund: %d %s", r.Status, r.Body)
	}
	testenv.Eventually(t, 10*time.Second, o.ID+" refunded", func() bool {
		if s.platform == sandbox.QQ {
			s.e.Do("POST", "/v1/orders/"+o.ID+"/sync", nil, testenv.Operator())
		}
		got := s.get(t, o.ID)
		return len(got.Refunds) == 1 && got.Refunds[0].Status == "succeeded"
	})
}

func (s *shop) reconcile(t *testing.T, date reconcile.Date) (*testenv.Response, *reconcile.Report) {
	t.Helper()
	r := s.e.Do("POST", "/v1/reconciliations", map[string]any{"app": s.app, "date": date.String()}, testenv.Operator())
	if r.Status != http.StatusCreated {
		return r, nil
	}
	var rep reconcile.Report
	r.Decode(t, &rep)
	return r, &rep
}

func (s *shop) mustReconcile(t *testing.T, date reconcile.Date) *reconcile.Report {
	t.Helper()
	r, rep := s.reconcile(t, date)
	if rep == nil {
		t.Fatalf("reconcile: %d %s", r.Status, r.Body)
	}
	return rep
}

type disc struct {
	Kind    reconcile.Kind
	Subject reconcile.Subject
	No      string
	Action  reconcile.Action
}

func discs(rep *reconcile.Report) []disc {
	var out []disc
	for _, d := range rep.Discrepancies {
		out = append(out, disc{d.Kind, d.Subject, d.OutTradeNo, d.Action})
	}
	slices.SortFunc(out, func(a, b disc) int { return strings.Compare(string(a.Kind)+a.No, string(b.Kind)+b.No) })
	return out
}

// TestEndToEnd: a day with three paid orders (one whose notification was
// lost), a refund and an unpaid order. The first run reports exactly the
// lost payment and recovers it; the second is clean; divergences in the
// bill then show up as what they are.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	for _, platform := range []string{sandbox.WeChat, sandbox.QQ, sandbox.Alipay} {
		t.Run(platform, func(t *testing.T) {
			t.Parallel()
			s := startShop(t, platform)
			a, b, c, unpaid := s.order(t, 101), s.order(t, 202), s.order(t, 303), s.order(t, 404)
			s.pays(t, a, false)
			s.pays(t, b, false)
			s.pays(t, c, true)
			s.refunds(t, a, 50)
			today := reconcile.DateOf(time.Now())

			r, _ := s.reconcile(t, today)
			if r.Status != http.StatusConflict || r.ErrorCode() != "bill_not_ready" || r.Header.Get("Retry-After") == "" ||
				!strings.Contains(string(r.Body), "retry after") {
				t.Fatalf("before the bill is ready: %d %s (Retry-After %q)", r.Status, r.Body, r.Header.Get("Retry-After"))
			}
			if err := s.e.Sandbox.MarkBillReady(s.app, today.String()); err != nil {
				t.Fatal(err)
			}

			first := s.mustReconcile(t, today)
			want := []disc{{reconcile.MissingLocal, reconcile.SubjectPayment, c.OutTradeNo, reconcile.ActionRecovered}}
			if got := discs(first); !slices.Equal(got, want) || first.Status != reconcile.StatusDiscrepancies {
				t.Fatalf("first run: %s %+v, want %+v", first.Status, got, want)
			}
			tot := first.Totals
			if tot.Bill != (reconcile.Side{Payments: 3, PaymentAmount: 606, Refunds: 1, RefundAmount: 50}) ||
				tot.Local != (reconcile.Side{Payments: 2, PaymentAmount: 303, Refunds: 1, RefundAmount: 50}) ||
				tot.Matched != 3 || tot.Summary == nil || tot.Summary.Count != 4 || tot.Summary.Amount != 606 || tot.Summary.Refunds != 50 {
				t.Errorf("totals %+v summary %+v", tot, tot.Summary)
			}
			if d := first.Discrepancies[0]; d.OrderID != c.ID || d.LocalStatus != "created" || *d.BillAmount != 303 ||
				!strings.Contains(d.Note, "moved created → paid (source reconcile)") {
				t.Errorf("the lost payment: %+v", d)
			}
			if first.PreviousRunID != nil || first.Diff != nil || first.Trigger != reconcile.TriggerAPI {
				t.Errorf("first run of the day: previous %v diff %+v trigger %s", first.PreviousRunID, first.Diff, first.Trigger)
			}

			got := s.get(t, c.ID)
			var moves []string
			for _, ev := range got.Events {
				if ev.Kind == orders.KindStatus {
					moves = append(moves, ev.From+"→"+ev.To+"/"+ev.Source)
				}
			}
			if got.Status != "paid" || !slices.Equal(moves, []string{"created→paying/reconcile", "paying→paid/reconcile"}) {
				t.Fatalf("recovered order: %s %v", got.Status, moves)
			}
			if st := s.get(t, unpaid.ID).Status; st != "created" {
				t.Errorf("the unpaid order moved to %s", st)
			}

			second := s.mustReconcile(t, today)
			if second.Status != reconcile.StatusMatched || len(second.Discrepancies) != 0 || second.Totals.Matched != 4 {
				t.Fatalf("second run: %s %+v", second.Status, second.Discrepancies)
			}
			if second.PreviousRunID == nil || *second.PreviousRunID != first.ID || second.Diff == nil ||
				len(second.Diff.New) != 0 || second.Diff.Unchanged != 0 ||
				!slices.Equal(second.Diff.Resolved, []reconcile.Key{first.Discrepancies[0].Key()}) {
				t.Errorf("second run's diff: previous %v %+v", second.PreviousRunID, second.Diff)
			}

			// The first run is kept as it was.
			r = s.e.Do("GET", "/v1/reconciliations/"+first.ID, nil, testenv.Operator())
			var stored reconcile.Report
			r.Decode(t, &stored)
			if r.Status != http.StatusOK || stored.ID != first.ID || !slices.Equal(discs(&stored), discs(first)) ||
				stored.Discrepancies[0].Note != first.Discrepancies[0].Note || stored.Totals.Matched != 3 {
				t.Fatalf("stored first run: %d %+v", r.Status, stored)
			}

			// Divergences: an order the bill leaves out, a changed amount,
			// a payment minigate never created.
			if err := s.e.Sandbox.DivergeBill(s.app, today.String(), sandbox.BillDivergence{
				Omit: []string{b.OutTradeNo}, Amounts: map[string]int64{c.OutTradeNo: 300},
				Extra: []sandbox.BillExtraPayment{{OutTradeNo: "STRANGER01", Amount: 77}},
			}); err != nil {
				t.Fatal(err)
			}
			third := s.mustReconcile(t, today)
			want = []disc{
				{reconcile.AmountMismatch, reconcile.SubjectPayment, c.OutTradeNo, reconcile.ActionFlagged},
				{reconcile.MissingLocal, reconcile.SubjectPayment, "STRANGER01", reconcile.ActionNone},
				{reconcile.MissingPlatform, reconcile.SubjectPayment, b.OutTradeNo, reconcile.ActionNone},
			}
			if got := discs(third); !slices.Equal(got, want) {
				t.Fatalf("divergences: %+v, want %+v", got, want)
			}
			for _, d := range third.Discrepancies {
				if d.Kind == reconcile.MissingPlatform && !strings.Contains(d.Note, "the platform's query confirms the payment") {
					t.Errorf("missing from the bill, paid at the platform: %q", d.Note)
				}
			}
			if third.Diff == nil || len(third.Diff.New) != 3 || len(third.Diff.Resolved) != 0 {
				t.Errorf("third run's diff %+v", third.Diff)
			}
			if !s.get(t, c.ID).NeedsReview || s.get(t, b.ID).NeedsReview {
				t.Error("the amount mismatch flags its order; the confirmed payment does not")
			}
			var runs int
			if err := s.e.DB.Get(&runs, `SELECT count(*) FROM reconciliation_runs WHERE app = $1 AND bill_date = $2::date`, s.app, today.String()); err != nil || runs != 3 {
				t.Errorf("runs stored: %d, %v", runs, err)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "shop", Platform: sandbox.WeChat, Pay: true},
		{ID: "nopay", Platform: sandbox.WeChat},
	}})
	today := reconcile.DateOf(time.Now())
	for _, tc := range []struct {
		name   string
		body   any
		opts   []testenv.Opt
		status int
		code   string
	}{
		{"no credentials", map[string]any{"app": e.App("shop").ID, "date": today.String()}, nil, 401, ""},
		{"unknown app", map[string]any{"app": "nope", "date": today.String()}, []testenv.Opt{testenv.Operator()}, 404, "app_not_found"},
		{"no merchant", map[string]any{"app": e.App("nopay").ID, "date": today.String()}, []testenv.Opt{testenv.Operator()}, 501, "payments_not_configured"},
		{"bad date", map[string]any{"app": e.App("shop").ID, "date": "2024/05/01"}, []testenv.Opt{testenv.Operator()}, 400, "invalid_date"},
		{"future date", map[string]any{"app": e.App("shop").ID, "date": today.AddDays(1).String()}, []testenv.Opt{testenv.Operator()}, 400, "invalid_date"},
		{"no app", map[string]any{"date": today.String()}, []testenv.Opt{testenv.Operator()}, 400, "invalid_app"},
		{"unknown field", map[string]any{"app": e.App("shop").ID, "date": today.String(), "force": true}, []testenv.Opt{testenv.Operator()}, 400, "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Do("POST", "/v1/reconciliations", tc.body, tc.opts...)
			if r.Status != tc.status || (tc.code != "" && r.ErrorCode() != tc.code) {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if r := e.Do("GET", "/v1/reconciliations/rec_nope", nil, testenv.Operator()); r.Status != 404 || r.ErrorCode() != "reconciliation_not_found" {
		t.Errorf("unknown run: %d %s", r.Status, r.Body)
	}
	if r := e.Do("GET", "/v1/reconciliations/rec_nope", nil); r.Status != 401 {
		t.Errorf("unknown run without credentials: %d", r.Status)
	}
}

// TestScheduledRuns: the daily job inserts one run per app with bills for
// yesterday (once, however often it fires); a run job reconciles its day,
// and snoozes while the bill is not ready.
func TestScheduledRuns(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{
		{ID: "wx", Platform: sandbox.WeChat, Pay: true},
		{ID: "ali", Platform: sandbox.Alipay, Pay: true},
		{ID: "nopay", Platform: sandbox.QQ},
	}})
	ctx := context.Background()
	today := reconcile.DateOf(time.Now())
	yesterday := today.AddDays(-1)

	for range 2 {
		if _, err := e.Minigate.River.Insert(ctx, reconcile.DailyArgs{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	count := func(q string, args ...any) int {
		var n int
		if err := e.DB.Get(&n, q, args...); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.Eventually(t, 15*time.Second, "the daily jobs to run", func() bool {
		return count(`SELECT count(*) FROM river_job WHERE kind = 'reconcile.daily' AND state = 'completed'`) == 2
	})
	for _, app := range []string{e.App("wx").ID, e.App("ali").ID} {
		if n := count(`SELECT count(*) FROM river_job WHERE kind = 'reconcile.run' AND args->>'app' = $1 AND args->>'date' = $2`, app, yesterday.String()); n != 1 {
			t.Errorf("runs inserted for %s: %d, want 1", app, n)
		}
	}
	if n := count(`SELECT count(*) FROM river_job WHERE kind = 'reconcile.run' AND args->>'app' = $1`, e.App("nopay").ID); n != 0 {
		t.Errorf("an app without a merchant got %d runs", n)
	}

	// Today's WeChat bill is not ready: the run snoozes until 10:00
	// tomorrow. Today's Alipay bill, marked ready, is reconciled.
	if err := e.Sandbox.MarkBillReady(e.App("ali").ID, today.String()); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{e.App("wx").ID, e.App("ali").ID} {
		if _, err := e.Minigate.River.Insert(ctx, reconcile.RunArgs{App: app, Date: today.String()}, nil); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 15*time.Second, "the scheduled runs", func() bool {
		return count(`SELECT count(*) FROM reconciliation_runs WHERE app = $1 AND bill_date = $2::date AND triggered_by = 'schedule'`,
			e.App("ali").ID, today.String()) == 1 &&
			count(`SELECT count(*) FROM river_job WHERE kind = 'reconcile.run' AND args->>'app' = $1 AND args->>'date' = $2
				AND state = 'scheduled' AND scheduled_at >= $3`, e.App("wx").ID, today.String(), today.ReadyAt().Add(-time.Second)) == 1
	})
}

// TestRefundDiscrepancies: a refund made in the merchant console (its
// notification lost) flags its order; a QQ wallet refund minigate still
// has pending is confirmed with a refund query and completed.
func TestRefundDiscrepancies(t *testing.T) {
	t.Parallel()
	t.Run("console refund", func(t *testing.T) {
		t.Parallel()
		s := startShop(t, sandbox.WeChat)
		o := s.order(t, 500)
		s.pays(t, o, false)
		if _, err := s.e.Sandbox.WeChatPayRefundNotify(context.Background(), s.e.SandboxApp("shop"), o.OutTradeNo,
			sandbox.WeChatPayRefundNotifyRequest{OutRefundNo: "CONSOLE-1", Amount: 120, Faults: sandbox.Faults{Drop: true}}); err != nil {
			t.Fatal(err)
		}
		today := reconcile.DateOf(time.Now())
		if err := s.e.Sandbox.MarkBillReady(s.app, today.String()); err != nil {
			t.Fatal(err)
		}
		rep := s.mustReconcile(t, today)
		want := []disc{{reconcile.MissingLocal, reconcile.SubjectRefund, o.OutTradeNo, reconcile.ActionFlagged}}
		if got := discs(rep); !slices.Equal(got, want) || rep.Discrepancies[0].OutRefundNo != "CONSOLE-1" {
			t.Fatalf("got %+v, want %+v", rep.Discrepancies, want)
		}
		got := s.get(t, o.ID)
		if !got.NeedsReview || got.Status != "paid" {
			t.Errorf("order after an unknown refund: %s, needs_review %v", got.Status, got.NeedsReview)
		}
		var reconcileFlags int
		for _, ev := range got.Events {
			if ev.Kind == orders.KindFlagged && ev.Source == string(orders.SourceReconcile) {
				reconcileFlags++
			}
		}
		if reconcileFlags != 1 {
			t.Errorf("flagged %d times by reconcile", reconcileFlags)
		}
	})
	t.Run("pending refund", func(t *testing.T) {
		t.Parallel()
		s := startShop(t, sandbox.QQ)
		o := s.order(t, 500)
		s.pays(t, o, false)
		r := s.e.Do("POST", "/v1/orders/"+o.ID+"/refunds", map[string]any{"amount": 200},
			testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, fmt.Sprintf("rf-%d", keys.Add(1))))
		r.Expect(t, http.StatusAccepted, "refund", nil)
		today := reconcile.DateOf(time.Now())
		if err := s.e.Sandbox.MarkBillReady(s.app, today.String()); err != nil {
			t.Fatal(err)
		}
		// The simulator settles refunds after a moment; the bill then
		// lists it while minigate (no notification on QQ) has it pending.
		var rep *reconcile.Report
		testenv.Eventually(t, 10*time.Second, "the refund in the bill", func() bool {
			rep = s.mustReconcile(t, today)
			return rep.Totals.Bill.Refunds == 1
		})
		want := []disc{{reconcile.MissingLocal, reconcile.SubjectRefund, o.OutTradeNo, reconcile.ActionRecovered}}
		if got := discs(rep); !slices.Equal(got, want) || rep.Discrepancies[0].LocalStatus != "pending" {
			t.Fatalf("got %+v, want %+v", rep.Discrepancies, want)
		}
		got := s.get(t, o.ID)
		if got.Status != "partially_refunded" || got.Refunds[0].Status != "succeeded" || got.NeedsReview {
			t.Errorf("after the confirmed refund: %s %+v review %v", got.Status, got.Refunds, got.NeedsReview)
		}
		if again := s.mustReconcile(t, today); again.Status != reconcile.StatusMatched {
			t.Errorf("next run: %+v", again.Discrepancies)
		}
	})
}
