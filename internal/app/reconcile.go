package app

import (
	"github.com/riverqueue/river"

	"github.com/minigate/minigate/reconcile"
)

// buildReconcile constructs reconciliation over every app (apps whose
// payment adapter downloads bills can be reconciled), mounts its routes and,
// unless reconcile.disabled, registers the daily job at reconcile.at.
func (a *App) buildReconcile(m *modules, opts Options, workers *river.Workers) error {
	apps := make([]reconcile.App, 0, len(a.Config.Apps))
	for _, c := range a.Config.Apps {
		p := a.platforms[c.ID]
		ra := reconcile.App{ID: c.ID, Platform: string(c.Platform), Payments: p.Payments}
		if bills, ok := p.Payments.(reconcile.BillSource); ok {
			ra.Bills = bills
		}
		apps = append(apps, ra)
	}
	svc, err := reconcile.New(a.DB, reconcile.Options{
		Apps: apps, Ledger: m.orders, Now: opts.Now, Logger: a.Log.With("component", "reconcile"),
	})
	if err != nil {
		return err
	}
	a.reconciler = svc
	m.routes = append(m.routes, svc.Mount)
	if a.Config.Reconcile.Disabled {
		return nil
	}
	daily, err := svc.Register(workers, a.Config.Reconcile.At)
	if err != nil {
		return err
	}
	m.workerCount += 2
	m.periodic = append(m.periodic, daily)
	return nil
}

// Reconciler returns the reconciliation service (the CLI runs it without
// serving).
func (a *App) Reconciler() *reconcile.Service { return a.reconciler }
