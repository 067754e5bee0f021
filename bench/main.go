// Command bench measures minigate against its ceilings and peers and prints
// one table, each row a ratio measured in the same run on the same machine
// (see docs/benchmarks.md). `make bench` runs it:
//
//	cd bench && go run . -minigate ../bin/minigate
//
// It creates a fresh database on the Postgres server at $DATABASE_URL (and
// a second one for the database ceilings), runs the platform simulator and
// an event receiver in this process, starts the built minigate binary
// against them, and drives it with vegeta at constant rates.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"

	"github.com/minigate/minigate/internal/db"
)

// options are the command line.
type options struct {
	minigate    string
	inProcess   bool
	noEvents    bool
	cpuProfile  string
	databaseURL string
	runs        int
	measure     time.Duration
	plan        rampPlan
	only        map[string]bool
	markdown    string
	jsonOut     string
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "peer-push" {
		if err := runPeer(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench peer:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	var only string
	flag.StringVar(&o.minigate, "minigate", "../bin/minigate", "the minigate binary to benchmark")
	flag.BoolVar(&o.inProcess, "inprocess", false, "run minigate inside the bench process (for -cpuprofile; memory is then this process's)")
	flag.BoolVar(&o.noEvents, "no-events", false, "configure no events URL: events are recorded, not queued or delivered (diagnosis; the table's rows are measured with delivery)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process to this file (use with -inprocess)")
	flag.StringVar(&o.databaseURL, "database-url", os.Getenv("DATABASE_URL"), "Postgres server URL; fresh databases are created there (default $DATABASE_URL)")
	flag.IntVar(&o.runs, "runs", 3, "measured runs per case (the median is reported)")
	flag.DurationVar(&o.measure, "measure", 5*time.Second, "length of each measured run")
	flag.DurationVar(&o.plan.Step, "step", 2*time.Second, "length of each ramp step")
	flag.Float64Var(&o.plan.Start, "start-rate", 100, "first ramp rate (requests/s)")
	flag.Float64Var(&o.plan.Factor, "ramp-factor", 1.4, "rate multiplier between ramp steps")
	flag.Float64Var(&o.plan.Max, "max-rate", 30000, "highest rate tried")
	flag.DurationVar(&o.plan.MaxP99, "max-p99", 500*time.Millisecond, "a step whose p99 exceeds this is not sustained")
	flag.DurationVar(&o.plan.MaxBacklog, "max-backlog", 500*time.Millisecond, "a step whose event deliveries finish more than this after its last answer is not sustained")
	flag.StringVar(&only, "only", "push,notify,orders", "cases to run: push, notify, orders")
	flag.StringVar(&o.markdown, "out", "", "also write the report (Markdown) to this file")
	flag.StringVar(&o.jsonOut, "json", "", "also write every measurement (JSON) to this file")
	flag.Parse()
	o.plan.Pause = time.Second
	o.only = map[string]bool{}
	for c := range strings.SplitSeq(only, ",") {
		c = strings.TrimSpace(c)
		if c != "push" && c != "notify" && c != "orders" {
			fmt.Fprintf(os.Stderr, "bench: -only: unknown case %q (push, notify, orders)\n", c)
			os.Exit(2)
		}
		o.only[c] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench is one run's environment.
type bench struct {
	o       options
	loader  *loader
	sim     *simulator
	recv    *receiver
	app     *benchApp
	mg      *instance
	pool    *sqlx.DB // minigate's database
	ceil    *sqlx.DB // the ceilings' database
	ceilJob *river.Client[*sql.Tx]
	openIDs []string
	report  report
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func run(ctx context.Context, o options) (err error) {
	if o.databaseURL == "" {
		return errors.New("no Postgres: set DATABASE_URL (make bench does, with scripts/db.sh)")
	}
	b := &bench{o: o, loader: newLoader()}
	b.report.Machine = probeMachine()
	b.report.Command = strings.TrimSpace("cd bench && go run . " + strings.Join(os.Args[1:], " "))
	b.report.Started = time.Now()
	if l := load1(); l > 1 {
		logf("warning: the 1-minute load average is %.2f; other work on this machine will skew the results", l)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	stamp := time.Now().Format("20060102_150405")
	mainDB, err := createDatabase(ctx, o.databaseURL, "minigate_bench_"+stamp)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, mainDB.drop()) }()
	ceilDB, err := createDatabase(ctx, o.databaseURL, "minigate_bench_ceiling_"+stamp)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ceilDB.drop()) }()
	b.report.Machine.Postgres = postgresVersion(ctx, mainDB)

	if b.sim, err = startSimulator(); err != nil {
		return err
	}
	defer b.sim.srv.Shutdown() //nolint:errcheck // best effort at exit
	if b.recv, err = startReceiver(); err != nil {
		return err
	}
	defer b.recv.srv.Close()
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	if b.app, err = newBenchApp("http://" + listen); err != nil {
		return err
	}
	b.sim.sb.AddApp(b.app.sb)
	b.openIDs = openIDsOf(b.app, b.sim, pushUsers)
	dir, err := os.MkdirTemp("", "minigate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	eventsURL := b.recv.url
	if o.noEvents {
		eventsURL = ""
		b.report.Command += "  [-no-events: not the table's configuration]"
	}
	path, err := writeConfig(dir, listen, mainDB.url, b.sim.url, eventsURL, b.app)
	if err != nil {
		return err
	}
	if o.inProcess {
		b.mg, err = startInProcess(ctx, path, dir, listen)
		b.report.MemoryNote = "peak RSS of the bench process, which runs minigate in-process (-inprocess)"
	} else {
		b.mg, err = startMinigate(ctx, o.minigate, path, dir, listen)
		b.report.MemoryNote = "peak RSS (VmHWM) of the minigate process during the case"
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.mg.stop()) }()
	if b.pool, err = db.Open(ctx, mainDB.url); err != nil {
		return err
	}
	defer b.pool.Close()
	var migrated bool
	if err := b.pool.QueryRowContext(ctx, `SELECT to_regclass('callbacks') IS NOT NULL`).Scan(&migrated); err != nil || !migrated {
		return fmt.Errorf("bench: minigate is not using database %s (%v)", mainDB.name, err)
	}
	if b.ceil, err = openMigrated(ctx, ceilDB.url); err != nil {
		return err
	}
	defer b.ceil.Close()
	if !o.noEvents {
		if b.ceilJob, err = river.NewClient(riverdatabasesql.New(b.ceil.DB), &river.Config{}); err != nil {
			return fmt.Errorf("bench: river: %w", err)
		}
	}
	logf("minigate %s (pid %d), simulator %s, databases %s and %s", b.mg.url, b.mg.pid, b.sim.url, mainDB.name, ceilDB.name)

	if o.only["push"] {
		if err := b.pushCases(ctx); err != nil {
			return err
		}
	}
	if o.only["notify"] {
		if err := b.notifyCases(ctx); err != nil {
			return err
		}
	}
	if o.only["orders"] {
		if err := b.orderCases(ctx); err != nil {
			return err
		}
	}
	b.report.Delivery = b.drainEvents(ctx, 30*time.Second)
	b.report.Machine.LoadEnd = loadAverage()
	b.report.Finished = time.Now()
	return b.writeReport()
}

// delivery is how event delivery kept up with the run.
type delivery struct {
	Delivered int64         `json:"delivered"`
	Pending   int64         `json:"pending"`
	Waited    time.Duration `json:"waited"`
}

// settleLimit bounds the wait for event deliveries before an attack.
const settleLimit = time.Minute

// waitDelivered waits up to limit until no event is pending delivery; it
// returns how many still are and how long it waited.
func (b *bench) waitDelivered(ctx context.Context, limit time.Duration) (int64, time.Duration) {
	start := time.Now()
	for {
		n, err := b.storedCount(ctx, `SELECT count(*) FROM events WHERE state = 'pending'`)
		if err != nil {
			logf("counting pending events: %v", err)
		}
		if n == 0 || time.Since(start) > limit || ctx.Err() != nil {
			return n, time.Since(start).Round(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drainEvents waits up to limit for minigate to deliver the events the run
// published.
func (b *bench) drainEvents(ctx context.Context, limit time.Duration) delivery {
	var d delivery
	d.Pending, d.Waited = b.waitDelivered(ctx, limit)
	d.Delivered = b.recv.delivered.Load()
	logf("events: %d delivered, %d still pending after waiting %s", d.Delivered, d.Pending, d.Waited)
	return d
}

func (b *bench) writeReport() error {
	md := b.report.markdown()
	fmt.Println(md)
	if b.o.markdown != "" {
		if err := os.WriteFile(b.o.markdown, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if b.o.jsonOut != "" {
		raw, err := json.MarshalIndent(b.report, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(b.o.jsonOut, raw, 0o644); err != nil {
			return err
		}
	}
	return nil
}
