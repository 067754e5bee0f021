// Package app wires minigate together from a *config.Config: the Postgres
// pool, the platform adapters (explicitly, per configured app), the domain
// services, the River client with their workers, and the Fiber routes.
// cmd/minigate calls it; so do the end-to-end tests, which is why the wiring
// lives here rather than in package main.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/httpx"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

// The event-delivery queue's polling. River's database/sql driver cannot
// LISTEN, and a job inserted inside a callback's transaction does not wake
// the local producer, so delivery jobs are found by polling. Polling that
// queue often (a cheap indexed query) spreads deliveries evenly instead of
// letting a second's worth pile up and run as one burst of concurrent
// transactions beside the callbacks being acknowledged (docs/benchmarks.md).
const (
	eventsPollInterval  = 100 * time.Millisecond
	eventsFetchCooldown = 10 * time.Millisecond
)

// Options adjust New for tests and sandbox mode.
type Options struct {
	Logger *slog.Logger
	// DB reuses an open pool instead of opening cfg.DatabaseURL.
	DB *sqlx.DB
	// Migrate applies pending migrations before starting.
	Migrate bool
	// Sandbox, when set, is mounted at /sandbox.
	Sandbox *sandbox.Sandbox
	// JobPollInterval overrides River's fetch poll interval (tests use a
	// short one).
	JobPollInterval time.Duration
	// Now replaces the clock in domain services (tests).
	Now func() time.Time
	// Middleware runs before every route, after httpx's own (tests check
	// each exchange against the API description with it).
	Middleware []fiber.Handler
}

// App is a wired minigate instance.
type App struct {
	Config *config.Config
	DB     *sqlx.DB
	River  *river.Client[*sql.Tx]
	HTTP   *fiber.App
	Log    *slog.Logger

	ownDB       bool
	started     bool
	workerCount int
	platforms   map[string]*Platform
	reconciler  *reconcile.Service
}

// New builds an instance. It does not listen or start background work;
// call Start and Serve.
func New(ctx context.Context, cfg *config.Config, opts Options) (*App, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &App{Config: cfg, Log: log, DB: opts.DB}
	if a.DB == nil {
		pool, err := db.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		a.DB, a.ownDB = pool, true
	}
	if opts.Migrate {
		applied, err := db.Migrate(ctx, a.DB.DB)
		if err != nil {
			a.close()
			return nil, err
		}
		if len(applied) > 0 {
			log.Info("migrations applied", "count", len(applied))
		}
	}
	platforms, err := buildPlatforms(cfg, a.DB, opts.Now, log)
	if err != nil {
		a.close()
		return nil, err
	}
	a.platforms = platforms

	workers := river.NewWorkers()
	mods, err := a.buildModules(ctx, opts, workers)
	if err != nil {
		a.close()
		return nil, err
	}
	poll := opts.JobPollInterval
	if poll == 0 {
		poll = time.Second
	}
	rcfg := &river.Config{
		Logger:            quieted(log).With("component", "river"),
		FetchPollInterval: poll,
		FetchCooldown:     min(poll/2, 100*time.Millisecond),
		JobTimeout:        cfg.Jobs.Timeout,
		// After a crash, jobs the dead instance was running are run again
		// this long after they started.
		RescueStuckJobsAfter: cfg.Jobs.RescueAfter,
		MaxAttempts:          25,
		// River deletes finished jobs itself.
		CompletedJobRetentionPeriod: cfg.Retention.CompletedJobs,
		CancelledJobRetentionPeriod: cfg.Retention.DiscardedJobs,
		DiscardedJobRetentionPeriod: cfg.Retention.DiscardedJobs,
	}
	if mods.workerCount > 0 {
		// Event deliveries get their own workers: a slow backend cannot
		// starve the sweeps and other jobs of the default queue.
		rcfg.Queues = map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: 20},
			events.Queue: {
				MaxWorkers:        20,
				FetchPollInterval: min(poll, eventsPollInterval),
				FetchCooldown:     min(poll/2, eventsFetchCooldown),
			},
		}
		rcfg.Workers = workers
		rcfg.PeriodicJobs = mods.periodic
	}
	rc, err := river.NewClient(riverdatabasesql.New(a.DB.DB), rcfg)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("app: river: %w", err)
	}
	a.River, a.workerCount = rc, mods.workerCount

	hopts := httpx.Options{BodyLimit: max(cfg.Limits.BodyBytes, cfg.Limits.MediaBytes), Logger: log}
	if opts.Sandbox != nil {
		// The simulator's routes share the listener: tag their lines.
		hopts.Components = map[string]string{"/sandbox/": "simulator"}
	}
	a.HTTP = httpx.New(hopts)
	for _, h := range opts.Middleware {
		a.HTTP.Use(h)
	}
	a.routes(mods)
	if opts.Sandbox != nil {
		a.HTTP.Mount("/sandbox", opts.Sandbox.Handler())
	}
	return a, nil
}

// Start starts background work (River workers, periodic jobs).
func (a *App) Start(ctx context.Context) error {
	if a.workerCount == 0 {
		return nil // insert-only: no background work is configured
	}
	if err := a.River.Start(ctx); err != nil {
		return fmt.Errorf("app: start jobs: %w", err)
	}
	a.started = true
	return nil
}

// Serve serves HTTP on ln until Shutdown.
func (a *App) Serve(ln net.Listener) error {
	return a.HTTP.Listener(ln)
}

// Shutdown stops accepting requests, lets in-flight ones finish (up to
// ctx's deadline), stops background work and closes the pool.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	if err := a.HTTP.ShutdownWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("app: http shutdown: %w", err))
	}
	if a.started {
		if err := a.River.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("app: stop jobs: %w", err))
		}
	}
	a.close()
	return errors.Join(errs...)
}

func (a *App) close() {
	if a.ownDB && a.DB != nil {
		a.DB.Close()
	}
}

// modules collects what the domain modules contribute to the wiring.
type modules struct {
	auth *auth.Authenticator
	// workerCount is the number of River workers registered; with none,
	// the River client is insert-only.
	workerCount int
	periodic    []*river.PeriodicJob
	orders      *orders.Service
	routes      []func(r fiber.Router, au *auth.Authenticator)
}
