package orders

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"

	"github.com/minigate/minigate/adapters"
)

// Close closes an unpaid order at the platform and then locally. The local
// close follows the platform's confirmation (a query after the close), so a
// close that races a payment ends paid: the platform refuses to close a
// paid order, minigate applies the paid state it then reports, and the
// answer is 409 order_paid.
func (s *Service) Close(ctx context.Context, id string) (*View, error) {
	o, a, err := s.orderWithApp(ctx, id)
	if err != nil {
		return nil, err
	}
	if o.Status == StatusClosed {
		return s.fullView(ctx, o)
	}
	if err := statusError(o.Status); err != nil {
		return nil, err
	}
	if o, err = s.closeAtPlatform(ctx, a, o, SourceAPI, nil); err != nil {
		return nil, err
	}
	if o.Status != StatusClosed {
		if err := statusError(o.Status); err != nil {
			return nil, err
		}
		return nil, errNotClosed
	}
	return s.fullView(ctx, o)
}

// closeAtPlatform closes o at the platform, asks the platform what the
// order's state is now, and applies that. An order the platform does not
// know cannot be paid and is closed locally.
func (s *Service) closeAtPlatform(ctx context.Context, a *App, o *Order, src Source, detail map[string]any) (*Order, error) {
	err := a.Payments.Close(ctx, o.OutTradeNo)
	if err != nil && !adapters.HasReason(err, adapters.ReasonNotFound) && !adapters.HasReason(err, adapters.ReasonConflict) {
		return nil, fmt.Errorf("orders: close %s: %w", o.ID, adapters.ToAppError(err))
	}
	t, err := a.Payments.Query(ctx, o.OutTradeNo)
	unknown := adapters.HasReason(err, adapters.ReasonNotFound)
	if err != nil && !unknown {
		return nil, fmt.Errorf("orders: query %s after close: %w", o.ID, adapters.ToAppError(err))
	}
	if !unknown && t.State == PaymentPending {
		return nil, errNotClosed
	}
	d := maps.Clone(detail)
	if d == nil {
		d = map[string]any{}
	}
	var out *Order
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	err = s.inTx(wctx, func(tx *sqlx.Tx) error {
		lo, err := getOrder(wctx, tx, OrderGetForUpdate, o.ID)
		if err != nil {
			return err
		}
		if !unknown {
			d["platform_state"] = string(t.State)
			out, err = s.applyTransaction(wctx, tx, a, lo, &t, src, d)
			return err
		}
		if !lo.Status.Unpaid() {
			out = lo
			return nil
		}
		d["platform_state"] = "not_found"
		if out, err = s.mustMove(wctx, tx, lo, StatusClosed, src, moveOpts{detail: d}); err != nil {
			return err
		}
		return s.publishOrder(wctx, tx, EventOrderClosed, out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Sync queries the platform for the order and its pending refunds now and
// applies the answers (source query).
func (s *Service) Sync(ctx context.Context, id string) (*View, error) {
	o, a, err := s.orderWithApp(ctx, id)
	if err != nil {
		return nil, err
	}
	if o, err = s.syncOrder(ctx, a, o); err != nil {
		return nil, err
	}
	refunds, err := listRefunds(ctx, s.db, o.ID)
	if err != nil {
		return nil, err
	}
	for i := range refunds {
		if refunds[i].Status != RefundStatusPending {
			continue
		}
		if err := s.syncRefund(ctx, a, o, &refunds[i]); err != nil {
			return nil, err
		}
	}
	if o, err = getOrder(ctx, s.db, OrderGet, o.ID); err != nil {
		return nil, err
	}
	return s.fullView(ctx, o)
}

// syncOrder queries the platform for o and applies the answer. An order
// the platform does not know is left as it is.
func (s *Service) syncOrder(ctx context.Context, a *App, o *Order) (*Order, error) {
	t, err := a.Payments.Query(ctx, o.OutTradeNo)
	if adapters.HasReason(err, adapters.ReasonNotFound) {
		return o, nil
	}
	if err != nil {
		return nil, fmt.Errorf("orders: query %s: %w", o.ID, adapters.ToAppError(err))
	}
	return s.applyLocked(ctx, a, &t, SourceQuery, func(tx *sqlx.Tx) (*Order, error) {
		return getOrder(ctx, tx, OrderGetForUpdate, o.ID)
	})
}

// applyLocked applies what the platform says about an order (t, from src)
// in one transaction, to the order lock locks and returns.
func (s *Service) applyLocked(ctx context.Context, a *App, t *Transaction, src Source, lock func(*sqlx.Tx) (*Order, error)) (*Order, error) {
	var out *Order
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		o, err := lock(tx)
		if err != nil {
			return err
		}
		out, err = s.applyTransaction(ctx, tx, a, o, t, src, map[string]any{"platform_state": string(t.State)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SweepStats says what one recovery pass looked at.
type SweepStats struct {
	Orders  int // unpaid orders queried
	Refunds int // pending refunds queried
}

// Sweep runs one recovery pass. It claims unpaid orders whose check is due
// (pushing their next check along the back-off schedule, so another
// instance's sweep skips them), queries the platform and applies the
// answer, and closes those that have expired (at the platform, then
// locally); then it does the same for pending refunds. Platform failures
// are logged and retried on the next check.
func (s *Service) Sweep(ctx context.Context) (SweepStats, error) {
	var st SweepStats
	due, err := claimDueOrders(ctx, s.db, s.now(), s.batch, s.schedule)
	if err != nil {
		return st, err
	}
	st.Orders = len(due)
	parallel(len(due), func(i int) { s.recoverOrder(ctx, &due[i]) })

	refunds, err := claimDueRefunds(ctx, s.db, s.now(), s.batch, s.schedule)
	if err != nil {
		return st, err
	}
	st.Refunds = len(refunds)
	parallel(len(refunds), func(i int) { s.recoverRefund(ctx, &refunds[i]) })
	return st, nil
}

// parallel runs fn(0..n-1) with at most sweepParallelism at a time.
func parallel(n int, fn func(i int)) {
	sem := make(chan struct{}, sweepParallelism)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

func (s *Service) recoverOrder(ctx context.Context, o *Order) {
	a, err := s.app(o.App)
	if err != nil {
		return // the app lost its merchant account; nothing to ask
	}
	cur, err := s.syncOrder(ctx, a, o)
	if err != nil {
		s.log.Warn("orders: recovery query failed", "order_id", o.ID, "err", err)
		return
	}
	if !cur.Status.Unpaid() || s.now().Before(cur.ExpiresAt) {
		return
	}
	if _, err := s.closeAtPlatform(ctx, a, cur, SourceQuery, map[string]any{"reason": "expired"}); err != nil {
		s.log.Warn("orders: closing an expired order failed", "order_id", o.ID, "err", err)
	}
}

func (s *Service) recoverRefund(ctx context.Context, r *StoredRefund) {
	a, err := s.app(r.App)
	if err != nil {
		return
	}
	o, err := getOrder(ctx, s.db, OrderGet, r.OrderID)
	if err != nil {
		s.log.Warn("orders: refund recovery: order unreadable", "refund_id", r.ID, "err", err)
		return
	}
	if err := s.syncRefund(ctx, a, o, r); err != nil {
		s.log.Warn("orders: refund recovery failed", "refund_id", r.ID, "err", err)
	}
}

// SweepInterval is how often the recovery sweep runs (on the leader
// instance; River inserts periodic jobs only there).
const SweepInterval = 30 * time.Second

// SweepArgs are the recovery sweep job's arguments.
type SweepArgs struct{}

// Kind names the job.
func (SweepArgs) Kind() string { return "orders.sweep" }

// InsertOpts runs each sweep once: a failed pass is simply the next one's work.
func (SweepArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 1} }

// SweepWorker runs Sweep.
type SweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	svc *Service
}

// Work runs one recovery pass.
func (w *SweepWorker) Work(ctx context.Context, _ *river.Job[SweepArgs]) error {
	st, err := w.svc.Sweep(ctx)
	if err != nil {
		return fmt.Errorf("orders: sweep: %w", err)
	}
	if st.Orders+st.Refunds > 0 {
		w.svc.log.Info("orders: recovery sweep", "orders", st.Orders, "refunds", st.Refunds)
	}
	return nil
}

// Register adds the sweep worker to workers and returns the periodic job
// that schedules it.
func (s *Service) Register(workers *river.Workers) (*river.PeriodicJob, error) {
	if err := river.AddWorkerSafely(workers, &SweepWorker{svc: s}); err != nil {
		return nil, fmt.Errorf("orders: register sweep: %w", err)
	}
	return river.NewPeriodicJob(river.PeriodicInterval(SweepInterval),
		func() (river.JobArgs, *river.InsertOpts) { return SweepArgs{}, nil },
		&river.PeriodicJobOpts{ID: SweepArgs{}.Kind(), RunOnStart: true}), nil
}

// ApplyReconciled applies what a platform bill says about one of app's
// orders (source reconcile), with the same checks and state moves as a
// notification: a bill row showing a payment minigate missed marks the
// order paid once; one that disagrees with the order flags it.
func (s *Service) ApplyReconciled(ctx context.Context, appID string, t Transaction) (*Order, error) {
	a, ok := s.apps[appID]
	if !ok {
		return nil, errAppNotFound
	}
	return s.applyLocked(ctx, a, &t, SourceReconcile, func(tx *sqlx.Tx) (*Order, error) {
		o, err := getOrder(ctx, tx, OrderGetByOutTradeNoForUpdate, a.ID, t.OutTradeNo)
		if errors.Is(err, ErrNotFound) {
			return nil, errOrderNotFound
		}
		return o, err
	})
}
