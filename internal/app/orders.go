package app

import (
	"context"

	"github.com/riverqueue/river"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sessions"
)

// buildOrders constructs the orders service over every app (apps without a
// payment channel answer 501 on order routes), registers its recovery
// sweep and mounts its routes. Payment notifications reach it through the
// callback pipeline (buildCallbacks).
func (a *App) buildOrders(m *modules, opts Options, workers *river.Workers, sess *sessions.Service, evs events.Publisher) (*orders.Service, error) {
	apps := make([]orders.App, 0, len(a.Config.Apps))
	for _, c := range a.Config.Apps {
		oa := orders.App{
			ID: c.ID, Platform: string(c.Platform), AppID: c.AppID,
			NotifyURL: a.Config.NotifyURL(c), Payments: a.platforms[c.ID].Payments,
		}
		if c.Pay != nil {
			oa.MchID = c.Pay.MchID
			if c.Platform == config.Alipay {
				oa.MchID = c.Pay.SellerID
			}
		}
		apps = append(apps, oa)
	}
	svc, err := orders.New(a.DB, orders.Options{
		Apps:        apps,
		Users:       orderUsers{sess},
		Events:      evs,
		CallTimeout: a.Config.Limits.UpstreamTimeout,
		Now:         opts.Now,
		Logger:      a.Log.With("component", "orders"),
	})
	if err != nil {
		return nil, err
	}
	sweep, err := svc.Register(workers)
	if err != nil {
		return nil, err
	}
	m.workerCount++
	m.periodic = append(m.periodic, sweep)
	m.routes = append(m.routes, svc.Mount)
	m.orders = svc
	return svc, nil
}

// orderUsers lets orders resolve payers and order owners through sessions.
type orderUsers struct{ s *sessions.Service }

func (u orderUsers) IdentityOfUser(ctx context.Context, app, userID string) (orders.Identity, bool, error) {
	id, ok, err := u.s.IdentityOfUser(ctx, app, userID)
	return orders.Identity(id), ok, err
}

func (u orderUsers) IdentityByOpenID(ctx context.Context, app, openID string) (orders.Identity, bool, error) {
	id, ok, err := u.s.IdentityByOpenID(ctx, app, openID)
	return orders.Identity(id), ok, err
}
