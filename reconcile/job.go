package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"
)

// The daily job: at a configured Asia/Shanghai time (config reconcile.at,
// default 10:30, after the platforms' 10:00), the periodic job DailyArgs
// inserts one RunArgs job per app with bills for yesterday; each reconciles
// its app and, while the platform has no bill yet, snoozes until it should.
// RunArgs jobs are unique by their arguments, so an app's day is
// reconciled once by the schedule however often the daily job fires (a
// leader change); people re-run days with the CLI or the API.

// giveUpAfter is how long after a bill's usual ready time the job stops
// waiting for it.
const giveUpAfter = 48 * time.Hour

// runTimeout bounds one scheduled run (downloads and queries included).
const runTimeout = 15 * time.Minute

// DailyArgs is the daily job's (empty) arguments.
type DailyArgs struct{}

// Kind names the job.
func (DailyArgs) Kind() string { return "reconcile.daily" }

// InsertOpts keeps each day's trigger to a few attempts.
func (DailyArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 5} }

// RunArgs reconciles one app's day.
type RunArgs struct {
	App  string `json:"app"`
	Date string `json:"date"`
}

// Kind names the job.
func (RunArgs) Kind() string { return "reconcile.run" }

// InsertOpts makes an app's day one job.
func (RunArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// DailyWorker inserts yesterday's runs.
type DailyWorker struct {
	river.WorkerDefaults[DailyArgs]
	svc *Service
}

// Work inserts one RunArgs job per app with bills.
func (w *DailyWorker) Work(ctx context.Context, _ *river.Job[DailyArgs]) error {
	client, err := river.ClientFromContextSafely[*sql.Tx](ctx)
	if err != nil {
		return fmt.Errorf("reconcile: daily: %w", err)
	}
	day := DateOf(w.svc.now()).AddDays(-1)
	var params []river.InsertManyParams
	for _, app := range w.svc.Billed() {
		params = append(params, river.InsertManyParams{Args: RunArgs{App: app, Date: day.String()}})
	}
	if len(params) == 0 {
		return nil
	}
	if _, err := client.InsertMany(ctx, params); err != nil {
		return fmt.Errorf("reconcile: daily: insert runs: %w", err)
	}
	return nil
}

// RunWorker runs one scheduled reconciliation.
type RunWorker struct {
	river.WorkerDefaults[RunArgs]
	svc *Service
}

// Timeout lets a run download a large bill and confirm many rows.
func (w *RunWorker) Timeout(*river.Job[RunArgs]) time.Duration { return runTimeout }

// Work reconciles the job's app and day; a bill not ready yet snoozes the
// job until the platform should have it, for up to giveUpAfter.
func (w *RunWorker) Work(ctx context.Context, job *river.Job[RunArgs]) error {
	date, err := ParseDate(job.Args.Date)
	if err != nil {
		return river.JobCancel(err)
	}
	_, err = w.svc.Run(ctx, job.Args.App, date, TriggerSchedule)
	var nr *NotReadyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &nr) && w.svc.now().Before(date.ReadyAt().Add(giveUpAfter)):
		return river.JobSnooze(max(nr.RetryAt.Sub(w.svc.now()), time.Minute))
	case errors.As(err, &nr):
		w.svc.log.Warn("reconcile: giving up on a bill that never became ready", "app", job.Args.App, "date", job.Args.Date)
		return river.JobCancel(err)
	case errors.Is(err, errAppNotFound) || errors.Is(err, errNoBills):
		return river.JobCancel(err)
	}
	return fmt.Errorf("reconcile: scheduled run %s %s: %w", job.Args.App, job.Args.Date, err)
}

// Register adds the workers to workers and returns the daily periodic job,
// run every day at at ("HH:MM", Asia/Shanghai).
func (s *Service) Register(workers *river.Workers, at string) (*river.PeriodicJob, error) {
	sched, err := ParseDaily(at)
	if err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &DailyWorker{svc: s}); err != nil {
		return nil, fmt.Errorf("reconcile: register: %w", err)
	}
	if err := river.AddWorkerSafely(workers, &RunWorker{svc: s}); err != nil {
		return nil, fmt.Errorf("reconcile: register: %w", err)
	}
	return river.NewPeriodicJob(sched, func() (river.JobArgs, *river.InsertOpts) { return DailyArgs{}, nil },
		&river.PeriodicJobOpts{ID: DailyArgs{}.Kind()}), nil
}

// Daily is a river.PeriodicSchedule firing once a day at a wall-clock time
// in Asia/Shanghai.
type Daily struct {
	Hour, Minute int
}

// ParseDaily parses "HH:MM".
func ParseDaily(at string) (Daily, error) {
	t, err := time.Parse("15:04", at)
	if err != nil {
		return Daily{}, fmt.Errorf("reconcile: daily time %q: want HH:MM", at)
	}
	return Daily{Hour: t.Hour(), Minute: t.Minute()}, nil
}

// Next returns the first firing strictly after current.
func (d Daily) Next(current time.Time) time.Time {
	c := current.In(Zone)
	next := time.Date(c.Year(), c.Month(), c.Day(), d.Hour, d.Minute, 0, 0, Zone)
	if !next.After(current) {
		next = next.AddDate(0, 0, 1)
	}
	return next
}
