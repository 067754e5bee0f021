package app

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/retention"
	"github.com/minigate/minigate/sessions"
	"github.com/minigate/minigate/webhooks"
)

// buildRetention registers the hourly prune of verified callbacks, finished
// events and ended session tokens older than config.Retention says (River
// prunes its own finished jobs, configured in New).
func (a *App) buildRetention(m *modules, opts Options, workers *river.Workers) error {
	pool, keep := a.DB, a.Config.Retention
	svc := retention.New([]retention.Table{
		{Name: "callbacks", Keep: keep.Callbacks, Prune: func(ctx context.Context, before time.Time, batch int) (int64, error) {
			return webhooks.PruneCallbacks(ctx, pool, before, batch)
		}},
		{Name: "events", Keep: keep.Events, Prune: func(ctx context.Context, before time.Time, batch int) (int64, error) {
			return events.Prune(ctx, pool, before, batch)
		}},
		{Name: "sessions", Keep: keep.Sessions, Prune: func(ctx context.Context, before time.Time, batch int) (int64, error) {
			return sessions.PruneSessions(ctx, pool, before, batch)
		}},
	}, retention.Options{Now: opts.Now, Logger: a.Log.With("component", "retention")})
	job, err := svc.Register(workers)
	if err != nil {
		return err
	}
	m.workerCount++
	m.periodic = append(m.periodic, job)
	return nil
}
