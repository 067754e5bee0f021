package orders

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/ids"
	"github.com/minigate/minigate/internal/pgtest"
)

// noUsers has no users: the state machine never looks payers up.
type noUsers struct{}

func (noUsers) IdentityOfUser(context.Context, string, string) (Identity, bool, error) {
	return Identity{}, false, nil
}

func (noUsers) IdentityByOpenID(context.Context, string, string) (Identity, bool, error) {
	return Identity{}, false, nil
}

type fixture struct {
	svc *Service
	db  *sqlx.DB
	app *App
}

// setup returns a Service on a fresh database whose events are recorded
// (no events URL, so no delivery jobs) by the real events package.
func setup(t *testing.T) *fixture {
	t.Helper()
	pool := pgtest.New(t)
	evs, err := events.New(pool, events.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := App{ID: "shop", Platform: "wechat", AppID: "wx0123456789abcdef", MchID: "1900000001"}
	svc, err := New(pool, Options{
		Apps:   []App{a},
		Users:  noUsers{},
		Events: evs,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, db: pool, app: svc.apps["shop"]}
}

// order stores an order of 100 fen in status st.
func (f *fixture) order(t *testing.T, st Status) *Order {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	id := ids.New("ord")
	o, created, err := insertOrder(ctx, f.db, "test", id, "h", newOrder{
		ID: id, App: "shop", Platform: "wechat", OpenID: "o-payer", OutTradeNo: "MG" + strings.TrimPrefix(id, "ord_"),
		Description: "test", Amount: 100, Currency: "CNY", ExpiresAt: now.Add(time.Hour), Now: now,
		ClaimUntil: now, NextCheck: now.Add(time.Minute),
	})
	if err != nil || !created {
		t.Fatalf("insert order: %v %v", created, err)
	}
	if st != StatusCreated {
		if _, err := f.db.Exec(`UPDATE orders SET status = $2 WHERE id = $1`, o.ID, string(st)); err != nil {
			t.Fatal(err)
		}
		o.Status = st
	}
	return o
}

func (f *fixture) paid(o *Order) *Transaction {
	return &Transaction{
		AppID: f.app.AppID, MchID: f.app.MchID, OutTradeNo: o.OutTradeNo, TransactionID: "4200000001",
		State: PaymentPaid, Amount: o.Amount, Currency: "CNY", PaidAt: time.Now(),
	}
}

// apply runs applyTransaction in its own transaction, as a notification does.
func (f *fixture) apply(t *testing.T, o *Order, tr *Transaction, src Source) *Order {
	t.Helper()
	var out *Order
	err := f.svc.inTx(context.Background(), func(tx *sqlx.Tx) error {
		lo, err := getOrder(context.Background(), tx, OrderGetForUpdate, o.ID)
		if err != nil {
			return err
		}
		out, err = f.svc.applyTransaction(context.Background(), tx, f.app, lo, tr, src, nil)
		return err
	})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return out
}

func (f *fixture) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := f.db.Get(&n, query, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) status(t *testing.T, id string) (Status, bool) {
	t.Helper()
	o, err := getOrder(context.Background(), f.db, OrderGet, id)
	if err != nil {
		t.Fatal(err)
	}
	return o.Status, o.NeedsReview
}

func TestPaidMovesOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		start    Status
		statuses int // timeline rows of kind status the payment adds
	}{
		{"from paying", StatusPaying, 1},
		{"from created (paid before /pay)", StatusCreated, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			o := f.order(t, tc.start)
			var wg sync.WaitGroup
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f.apply(t, o, f.paid(o), SourceNotify)
				}()
			}
			wg.Wait()
			if st, _ := f.status(t, o.ID); st != StatusPaid {
				t.Fatalf("status = %s, want paid", st)
			}
			if n := f.count(t, `SELECT count(*) FROM order_events WHERE order_id = $1 AND to_status = 'paid'`, o.ID); n != 1 {
				t.Fatalf("%d paid timeline rows, want 1", n)
			}
			if n := f.count(t, `SELECT count(*) FROM order_events WHERE order_id = $1 AND kind = 'status'`, o.ID); n != tc.statuses {
				t.Fatalf("%d status rows, want %d", n, tc.statuses)
			}
			if n := f.count(t, `SELECT count(*) FROM events WHERE type = 'order.paid' AND data->>'order_id' = $1`, o.ID); n != 1 {
				t.Fatalf("%d order.paid events, want 1", n)
			}
		})
	}
}

func TestMismatchFlagsAndNeverPays(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, tc := range []struct {
		name   string
		tamper func(*Transaction)
		field  string
	}{
		{"amount", func(tr *Transaction) { tr.Amount = 1 }, "amount"},
		{"currency", func(tr *Transaction) { tr.Currency = "USD" }, "currency"},
		{"foreign app", func(tr *Transaction) { tr.AppID = "wxforeign" }, "app_id"},
		{"foreign merchant", func(tr *Transaction) { tr.MchID = "1999999999" }, "mch_id"},
		{"other out_trade_no", func(tr *Transaction) { tr.OutTradeNo = "other0001" }, "out_trade_no"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.order(t, StatusPaying)
			tr := f.paid(o)
			tc.tamper(tr)
			f.apply(t, o, tr, SourceNotify)
			st, review := f.status(t, o.ID)
			if st != StatusPaying || !review {
				t.Fatalf("status %s needs_review %v, want paying and flagged", st, review)
			}
			var detail string
			if err := f.db.Get(&detail, `SELECT detail::text FROM order_events WHERE order_id = $1 AND kind = 'flagged'`, o.ID); err != nil {
				t.Fatalf("flag row: %v", err)
			}
			if !strings.Contains(detail, `"`+tc.field+`"`) || !strings.Contains(detail, `"mismatch"`) {
				t.Fatalf("flag detail %s does not name %s", detail, tc.field)
			}
			if n := f.count(t, `SELECT count(*) FROM events WHERE data->>'order_id' = $1`, o.ID); n != 0 {
				t.Fatalf("%d events for a mismatched payment", n)
			}
		})
	}
}

func TestStateMachineTable(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, tc := range []struct {
		name    string
		start   Status
		state   PaymentState
		want    Status
		flagged bool
		event   string
	}{
		{"paying closed at platform", StatusPaying, PaymentClosed, StatusClosed, false, EventOrderClosed},
		{"created closed at platform", StatusCreated, PaymentClosed, StatusClosed, false, EventOrderClosed},
		{"paying failed", StatusPaying, PaymentFailed, StatusFailed, false, EventOrderFailed},
		{"paying still pending", StatusPaying, PaymentPending, StatusPaying, false, ""},
		{"refunded at platform implies paid", StatusPaying, PaymentRefunded, StatusPaid, false, EventOrderPaid},
		{"closed order paid: flagged, stays closed", StatusClosed, PaymentPaid, StatusClosed, true, ""},
		{"failed order paid: flagged, stays failed", StatusFailed, PaymentPaid, StatusFailed, true, ""},
		{"paid order closed (full refund): unchanged", StatusPaid, PaymentClosed, StatusPaid, false, ""},
		{"refunded order paid again: unchanged", StatusRefunded, PaymentPaid, StatusRefunded, false, ""},
		{"closed order failed: unchanged", StatusClosed, PaymentFailed, StatusClosed, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.order(t, tc.start)
			tr := f.paid(o)
			tr.State = tc.state
			f.apply(t, o, tr, SourceQuery)
			st, review := f.status(t, o.ID)
			if st != tc.want || review != tc.flagged {
				t.Fatalf("status %s needs_review %v, want %s %v", st, review, tc.want, tc.flagged)
			}
			n := f.count(t, `SELECT count(*) FROM events WHERE data->>'order_id' = $1`, o.ID)
			if tc.event == "" && n != 0 || tc.event != "" && f.count(t, `SELECT count(*) FROM events WHERE type = $2 AND data->>'order_id' = $1`, o.ID, tc.event) != 1 {
				t.Fatalf("events: %d, want %q once", n, tc.event)
			}
			if tc.start != tc.want {
				if m := f.count(t, `SELECT count(*) FROM order_events WHERE order_id = $1 AND to_status = $2 AND source = 'query'`, o.ID, string(tc.want)); m != 1 {
					t.Fatalf("%d timeline rows to %s with source query", m, tc.want)
				}
			}
		})
	}
}

func TestRefundAccounting(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	o := f.order(t, StatusPaid)
	now := time.Now()
	mk := func(amount int64) *StoredRefund {
		id := ids.New("ref")
		r, err := insertRefund(ctx, f.db, newRefund{ID: id, OrderID: o.ID, App: "shop", OutRefundNo: "RF" + id[4:], Amount: amount, ClaimUntil: now, NextCheck: now, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	apply := func(r *StoredRefund, st RefundState, amount int64) {
		t.Helper()
		err := f.svc.inTx(ctx, func(tx *sqlx.Tx) error {
			return f.svc.applyRefund(ctx, tx, f.app, &Refund{OutTradeNo: o.OutTradeNo, OutRefundNo: r.OutRefundNo, RefundID: "50000" + r.ID[4:10], State: st, Amount: amount}, SourceNotify, "REFUND.ABNORMAL", nil)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(wantStatus Status, wantRefunded int64) {
		t.Helper()
		cur, err := getOrder(ctx, f.db, OrderGet, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status != wantStatus || cur.RefundedAmount != wantRefunded {
			t.Fatalf("order %s refunded %d, want %s %d", cur.Status, cur.RefundedAmount, wantStatus, wantRefunded)
		}
	}
	r1, r2, r3 := mk(30), mk(20), mk(70)
	apply(r1, RefundSucceeded, 30)
	apply(r1, RefundSucceeded, 30) // a duplicate report changes nothing
	check(StatusPartiallyRefunded, 30)
	apply(r2, RefundFailed, 20)
	apply(r2, RefundSucceeded, 20) // success after failure: flagged, not counted
	check(StatusPartiallyRefunded, 30)
	if _, review := f.status(t, o.ID); !review {
		t.Fatal("success after failure not flagged")
	}
	apply(r3, RefundSucceeded, 999) // wrong amount: flagged, not counted
	check(StatusPartiallyRefunded, 30)
	apply(r3, RefundSucceeded, 70)
	check(StatusRefunded, 100)
	for typ, want := range map[string]int{EventRefundSucceeded: 2, EventRefundFailed: 1} {
		if n := f.count(t, `SELECT count(*) FROM events WHERE type = $1 AND data->>'order_id' = $2`, typ, o.ID); n != want {
			t.Fatalf("%d %s events, want %d", n, typ, want)
		}
	}
	if n := f.count(t, `SELECT count(*) FROM order_events WHERE order_id = $1 AND kind = 'refund_succeeded'`, o.ID); n != 2 {
		t.Fatalf("%d refund_succeeded rows, want 2", n)
	}
}

func TestSweepClaimsAreDisjoint(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for range 30 {
		o := f.order(t, StatusPaying)
		if _, err := f.db.Exec(`UPDATE orders SET next_check_at = now() - interval '1 second' WHERE id = $1`, o.ID); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := claimDueOrders(ctx, f.db, time.Now(), 10, f.svc.schedule)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, o := range got {
				seen[o.ID]++
				if o.CheckCount != 1 || o.NextCheckAt == nil || time.Until(*o.NextCheckAt) < time.Minute {
					t.Errorf("claimed order next check %v count %d: want ≥ 1 minute out, count 1", o.NextCheckAt, o.CheckCount)
				}
			}
		}()
	}
	wg.Wait()
	if len(seen) != 30 {
		t.Fatalf("claimed %d distinct orders, want 30", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("order %s claimed %d times", id, n)
		}
	}
	again, err := claimDueOrders(ctx, f.db, time.Now(), 100, f.svc.schedule)
	if err != nil || len(again) != 0 {
		t.Fatalf("second pass claimed %d (%v), want 0", len(again), err)
	}
}

func TestBackoffSchedule(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	o := f.order(t, StatusPaying)
	// Expiring far out: each claim steps along the schedule, then repeats
	// its last step.
	if _, err := f.db.Exec(`UPDATE orders SET expires_at = now() + interval '1 day' WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	want := []time.Duration{2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour, time.Hour}
	for i, step := range want {
		if _, err := f.db.Exec(`UPDATE orders SET next_check_at = $2 WHERE id = $1`, o.ID, now); err != nil {
			t.Fatal(err)
		}
		got, err := claimDueOrders(ctx, f.db, now, 10, f.svc.schedule)
		if err != nil || len(got) != 1 {
			t.Fatalf("claim %d: %d rows, %v", i, len(got), err)
		}
		if d := got[0].NextCheckAt.Sub(now); d < step-time.Millisecond || d > step+time.Millisecond {
			t.Fatalf("claim %d: next check in %v, want %v", i, d, step)
		}
	}
	// Near expiry the next check is the expiry (at least a minute out).
	if _, err := f.db.Exec(`UPDATE orders SET next_check_at = $2, expires_at = $3 WHERE id = $1`, o.ID, now, now.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := claimDueOrders(ctx, f.db, now, 10, f.svc.schedule)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim near expiry: %d rows, %v", len(got), err)
	}
	if d := got[0].NextCheckAt.Sub(now); d < 3*time.Minute-time.Second || d > 3*time.Minute+time.Second {
		t.Fatalf("next check near expiry in %v, want 3m", d)
	}
}

func TestApplyReconciled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	o := f.order(t, StatusPaying)
	for range 2 { // a bill read twice moves the order once
		got, err := f.svc.ApplyReconciled(ctx, "shop", *f.paid(o))
		if err != nil || got.Status != StatusPaid {
			t.Fatalf("reconciled: %v %v", got, err)
		}
	}
	if n := f.count(t, `SELECT count(*) FROM order_events WHERE order_id = $1 AND source = 'reconcile' AND to_status = 'paid'`, o.ID); n != 1 {
		t.Fatalf("%d reconcile moves, want 1", n)
	}
	unknown := f.paid(o)
	unknown.OutTradeNo = "NOSUCHORDER1"
	if _, err := f.svc.ApplyReconciled(ctx, "shop", *unknown); !errors.Is(err, errOrderNotFound) {
		t.Fatalf("unknown order: %v", err)
	}
	if _, err := f.svc.ApplyReconciled(ctx, "nope", *f.paid(o)); !errors.Is(err, errAppNotFound) {
		t.Fatalf("unknown app: %v", err)
	}
}
