// Package retention deletes finished records once they are older than their
// configured retention (config.Retention): verified callbacks, finished
// events with their delivery attempts, ended session tokens. An hourly River
// periodic job runs one pass on the leader instance, deleting in batches so
// that no statement holds locks for long. River deletes its own finished
// jobs (its retention periods come from the same config section); orders,
// refunds, their timelines and the inbox are never deleted.
//
// The tables are given as functions, each domain package owning its SQL:
//
//	retention.Table{Name: "callbacks", Keep: cfg.Retention.Callbacks,
//		Prune: func(ctx context.Context, before time.Time, batch int) (int64, error) {
//			return webhooks.PruneCallbacks(ctx, pool, before, batch)
//		}}
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/minigate/minigate/internal/metrics"
)

// Defaults.
const (
	// Interval is how often the prune job runs.
	Interval = time.Hour
	// DefaultBatch bounds the rows one DELETE removes.
	DefaultBatch = 1000
)

// Table is one kind of record to prune.
type Table struct {
	// Name labels the table in logs and in minigate_retention_pruned_total.
	Name string
	// Keep is the retention: rows older than now−Keep are deleted.
	Keep time.Duration
	// Prune deletes at most batch rows older than before and returns how
	// many it deleted.
	Prune func(ctx context.Context, before time.Time, batch int) (int64, error)
}

// Options configures a Service.
type Options struct {
	// Batch overrides DefaultBatch.
	Batch int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per pass that deleted something.
	Logger *slog.Logger
}

// Service prunes tables.
type Service struct {
	tables []Table
	batch  int
	now    func() time.Time
	log    *slog.Logger
}

// New returns a Service pruning tables.
func New(tables []Table, opts Options) *Service {
	s := &Service{tables: tables, batch: opts.Batch, now: opts.Now, log: opts.Logger}
	if s.batch <= 0 {
		s.batch = DefaultBatch
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Run makes one pass over every table, batch after batch until a table has
// nothing older than its retention left, and returns the rows deleted per
// table. A failing table does not stop the others; their errors are joined.
func (s *Service) Run(ctx context.Context) (map[string]int64, error) {
	deleted := map[string]int64{}
	var errs []error
	for _, t := range s.tables {
		before := s.now().Add(-t.Keep)
		for {
			n, err := t.Prune(ctx, before, s.batch)
			deleted[t.Name] += n
			metrics.Pruned.WithLabelValues(t.Name).Add(float64(n))
			if err != nil {
				errs = append(errs, fmt.Errorf("retention: %s: %w", t.Name, err))
				break
			}
			if n < int64(s.batch) {
				break
			}
		}
	}
	return deleted, errors.Join(errs...)
}

// PruneArgs is the prune job.
type PruneArgs struct{}

// Kind names the job.
func (PruneArgs) Kind() string { return "retention.prune" }

// InsertOpts runs each pass once: a failed pass is the next one's work.
func (PruneArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 1} }

// Worker runs a pass.
type Worker struct {
	river.WorkerDefaults[PruneArgs]
	svc *Service
}

// Work runs one pass.
func (w *Worker) Work(ctx context.Context, _ *river.Job[PruneArgs]) error {
	deleted, err := w.svc.Run(ctx)
	total := int64(0)
	args := []any{}
	for name, n := range deleted {
		total += n
		args = append(args, name, n)
	}
	if total > 0 {
		w.svc.log.Info("retention: pruned", args...)
	}
	return err
}

// Register adds the worker to workers and returns the hourly periodic job.
func (s *Service) Register(workers *river.Workers) (*river.PeriodicJob, error) {
	if err := river.AddWorkerSafely(workers, &Worker{svc: s}); err != nil {
		return nil, fmt.Errorf("retention: register: %w", err)
	}
	return river.NewPeriodicJob(river.PeriodicInterval(Interval),
		func() (river.JobArgs, *river.InsertOpts) { return PruneArgs{}, nil },
		&river.PeriodicJobOpts{ID: PruneArgs{}.Kind(), RunOnStart: true}), nil
}
