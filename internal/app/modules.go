package app

import (
	"context"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"

	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sessions"
	"github.com/minigate/minigate/webhooks"
)

// buildModules constructs the domain services, registers their River workers
// and periodic jobs, and collects their routes.
func (a *App) buildModules(ctx context.Context, opts Options, workers *river.Workers) (*modules, error) {
	m := &modules{}
	// Events to the business backend: the domain services publish them.
	evs, err := events.New(a.DB, events.Options{
		URL: a.Config.Events.URL, Secret: a.Config.Events.Secret,
		Logger: a.Log.With("component", "events"), Now: opts.Now,
	})
	if err != nil {
		return nil, err
	}
	sess, err := a.buildSessions(opts, evs)
	if err != nil {
		return nil, err
	}
	m.auth = auth.New(a.Config.APIKeys, sess)
	m.routes = append(m.routes, sess.Routes)
	m.workerCount += evs.AddWorkers(workers)
	ords, err := a.buildOrders(m, opts, workers, sess, evs)
	if err != nil {
		return nil, err
	}
	if err := a.buildReconcile(m, opts, workers); err != nil {
		return nil, err
	}
	if err := a.buildRetention(m, opts, workers); err != nil {
		return nil, err
	}
	cs, err := a.buildCustomerService(opts)
	if err != nil {
		return nil, err
	}
	m.routes = append(m.routes, cs.Mount)
	callbacks, pipeline := a.buildCallbacks(opts, customerservice.NewInbox(evs, opts.Now), ords)
	m.routes = append(m.routes, callbacks, evs.Mount)
	registerErasers(sess, ords, cs, pipeline, evs)
	return m, nil
}

// buildCallbacks builds the callback pipeline and returns the routes that
// feed it: /callbacks/{app}/messages (message pushes, into the inbox),
// /callbacks/{app}/payments (payment and refund notifications, into
// orders) and the rejected-callbacks listing, and the pipeline (which
// erasures scrub). Every callback flows one way:
// platform → adapter (verify, open) → pipeline (store, de-duplicate) →
// sink (domain state, events) → reply.
func (a *App) buildCallbacks(opts Options, inbox webhooks.MessageSink, ords webhooks.PaymentSink[*orders.Notification]) (func(fiber.Router, *auth.Authenticator), *webhooks.Pipeline) {
	pipeline := webhooks.NewPipeline(a.DB, webhooks.Options{
		BodyLimit: a.Config.Limits.BodyBytes, RejectedKept: a.Config.Limits.RejectedCallbacksKept,
		Logger: a.Log.With("component", "webhooks"), Now: opts.Now,
	})
	messageVerifiers := map[string]webhooks.MessageVerifier{}
	paymentVerifiers := map[string]orders.PaymentNotifications{}
	for id, p := range a.platforms {
		if p.Messages != nil {
			messageVerifiers[id] = p.Messages
		}
		if p.PaymentNotifications != nil {
			paymentVerifiers[id] = p.PaymentNotifications
		}
	}
	messages := webhooks.NewMessages(pipeline, messageVerifiers, inbox, nil)
	payments := webhooks.NewPayments(pipeline, paymentVerifiers, ords)
	return func(r fiber.Router, au *auth.Authenticator) {
		messages.Mount(r)
		payments.Mount(r)
		pipeline.MountOperator(r, au)
	}, pipeline
}

// buildSessions constructs the sessions service (logins, session tokens,
// phone numbers, decryption) over every app with a login adapter.
func (a *App) buildSessions(opts Options, evs *events.Service) (*sessions.Service, error) {
	var apps []sessions.App
	for _, c := range a.Config.Apps {
		p := a.platforms[c.ID]
		apps = append(apps, sessions.App{
			ID: c.ID, Platform: string(c.Platform), AppID: c.AppID, UnionScope: c.UnionScope,
			Login: p.Login, Phone: p.Phone,
		})
	}
	return sessions.New(a.DB, apps, sessions.Options{
		SecretKey: a.Config.SecretKey, TTL: a.Config.Sessions.TTL, Now: opts.Now,
		Logger: a.Log.With("component", "sessions"),
		Publish: func(ctx context.Context, tx *sqlx.Tx, typ string, data any) error {
			_, err := evs.Publish(ctx, tx, typ, data)
			return err
		},
	})
}

// buildCustomerService constructs customer service (sends, inbox, typing,
// media) over every app.
func (a *App) buildCustomerService(opts Options) (*customerservice.Service, error) {
	apps := make([]customerservice.App, 0, len(a.Config.Apps))
	for _, c := range a.Config.Apps {
		apps = append(apps, customerservice.App{
			ID: c.ID, Platform: string(c.Platform), CustomerService: a.platforms[c.ID].CustomerService,
		})
	}
	return customerservice.New(a.DB, customerservice.Options{
		Apps: apps, BodyLimit: a.Config.Limits.BodyBytes, MediaLimit: a.Config.Limits.MediaBytes,
		Now: opts.Now, Logger: a.Log.With("component", "customerservice"),
	})
}
