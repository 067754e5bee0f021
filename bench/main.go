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
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	vegeta "github.com/tsenart/vegeta/v12/lib"

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
	flag.StringVar(&only, "only", "push,notify,orders", "cases to run: push, notify, orders")
	flag.StringVar(&o.markdown, "out", "", "also write the report (Markdown) to this file")
	flag.StringVar(&o.jsonOut, "json", "", "also write every measurement (JSON) to this file")
	flag.Parse()
	o.plan.Pause = time.Second
	o.only = map[string]bool{}
	for c := range strings.SplitSeq(only, ",") {
		o.only[strings.TrimSpace(c)] = true
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
	b.report.Command = "make bench  (" + strings.Join(os.Args, " ") + ")"
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

// httpCase is one server under constant-rate load.
type httpCase struct {
	name  string
	base  string
	pid   int
	gen   func(n int) ([]vegeta.Target, error)
	cycle bool
	check func(*vegeta.Result) bool
	// half also measures latency at half the saturating rate.
	half bool
	// settle waits, before each attack, until minigate has delivered the
	// events of the previous ones: every attack starts without a backlog.
	settle bool
}

// caseResult is what runHTTP measured.
type caseResult struct {
	Name       string         `json:"name"`
	Saturating float64        `json:"saturating_rate"`
	Ramp       []attackResult `json:"ramp"`
	Runs       []attackResult `json:"runs"`
	Half       []attackResult `json:"half,omitempty"`
	Throughput float64        `json:"throughput"` // median of Runs
	P50        time.Duration  `json:"p50"`        // median of Half
	P99        time.Duration  `json:"p99"`        // median of Half
	PeakRSS    int64          `json:"peak_rss"`
	// Requests and OK count all requests and the successful ones (checked
	// against the database for minigate).
	Requests uint64 `json:"requests"`
	OK       uint64 `json:"ok"`
}

// runHTTP finds c's saturating rate with a ramp, then measures throughput
// there o.runs times and, with c.half, latency at half of it.
func (b *bench) runHTTP(ctx context.Context, c httpCase) (*caseResult, error) {
	logf("%s", c.name)
	res := &caseResult{Name: c.name}
	rssReset := resetPeakRSS(c.pid)
	try := func(rate float64, d time.Duration) (attackResult, error) {
		if c.settle {
			if pending, waited := b.waitDelivered(ctx, settleLimit); pending > 0 || waited > time.Second {
				logf("  waited %s for event deliveries (%d still pending)", waited, pending)
			}
		}
		ts, err := c.gen(int(rate*d.Seconds()*1.02) + 10)
		if err != nil {
			return attackResult{}, err
		}
		r := b.loader.attack((&targets{list: ts, cycle: c.cycle}).targeter(), rate, d, c.check)
		res.Requests, res.OK = res.Requests+r.Requests, res.OK+r.OK
		return r, nil
	}
	sat, steps, err := ramp(b.o.plan, try, logf)
	res.Saturating, res.Ramp = sat, steps
	if err != nil {
		return res, err
	}
	logf("  saturating rate %.0f/s", sat)
	measure := func(rate float64, label string) ([]attackResult, error) {
		var out []attackResult
		for range b.o.runs {
			r, err := try(rate, b.o.measure)
			if err != nil {
				return out, err
			}
			logf("  %s %s", label, r)
			out = append(out, r)
			time.Sleep(b.o.plan.Pause)
		}
		return out, nil
	}
	if res.Runs, err = measure(sat, "run "); err != nil {
		return res, err
	}
	var tps []float64
	for _, r := range res.Runs {
		tps = append(tps, r.Throughput)
	}
	res.Throughput = median(tps)
	if c.half {
		if res.Half, err = measure(max(1, sat/2), "half"); err != nil {
			return res, err
		}
		var p50s, p99s []time.Duration
		for _, r := range res.Half {
			p50s, p99s = append(p50s, r.P50), append(p99s, r.P99)
		}
		res.P50, res.P99 = medianDur(p50s), medianDur(p99s)
	}
	if rssReset || c.pid != b.mg.pid {
		res.PeakRSS = peakRSS(c.pid)
	}
	return res, nil
}

// loopCase is a closed-loop measurement (database ceilings, the SDK loop).
type loopCase struct {
	Name       string       `json:"name"`
	Workers    int          `json:"workers"`
	Runs       []loopResult `json:"runs"`
	Throughput float64      `json:"throughput"`
}

// runLoop finds the best worker count among levels, then measures there.
func (b *bench) runLoop(ctx context.Context, name string, levels []int, op func(ctx context.Context, n int64) error) (*loopCase, error) {
	logf("%s", name)
	var seq atomic.Int64
	w, err := bestWorkers(ctx, levels, b.o.plan.Step, &seq, op, logf)
	if err != nil {
		return nil, err
	}
	lc := &loopCase{Name: name, Workers: w}
	var tps []float64
	for range b.o.runs {
		r := loop(ctx, w, b.o.measure, &seq, op)
		logf("  run  %s", r)
		if r.Errors > 0 {
			return nil, fmt.Errorf("bench: %s: %d operations failed: %s", name, r.Errors, r.FirstError)
		}
		lc.Runs = append(lc.Runs, r)
		tps = append(tps, r.Throughput)
	}
	lc.Throughput = median(tps)
	return lc, nil
}

// workerLevels are the concurrencies a loop is probed at: powers of two
// and the concurrency minigate itself ran at (Little's law: throughput ×
// mean latency at the saturating rate).
func workerLevels(c *caseResult) []int {
	levels := []int{4, 8, 16, 32}
	if c != nil && len(c.Runs) > 0 {
		r := c.Runs[len(c.Runs)/2]
		l := int(r.Throughput*r.Mean.Seconds() + 0.5)
		if l >= 1 && l <= 64 && !slices.Contains(levels, l) {
			levels = append(levels, l)
			slices.Sort(levels)
		}
	}
	return levels
}

// storedCount runs a count query on minigate's database.
func (b *bench) storedCount(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := b.pool.QueryRowContext(ctx, query, args...).Scan(&n)
	return n, err
}

// checkStored fails when fewer rows are stored than requests were
// acknowledged: an ack must mean the callback (or order) is durable.
func checkStored(what string, stored int64, acked uint64) error {
	if stored < int64(acked) {
		return fmt.Errorf("bench: %d %s acknowledged but only %d stored", acked, what, stored)
	}
	logf("  checked: %d acknowledged, %d stored", acked, stored)
	return nil
}

// maxReplayed bounds the pushes kept for the duplicate case.
const maxReplayed = 60000

func (b *bench) pushCases(ctx context.Context) error {
	gen := newPushGen(b.app, b.openIDs)
	var sent []vegeta.Target
	mg, err := b.runHTTP(ctx, httpCase{
		name: "message push → minigate", base: b.mg.url, pid: b.mg.pid, check: isSuccessAck, half: true, settle: true,
		gen: func(n int) ([]vegeta.Target, error) {
			ts, err := gen.make(b.mg.url, n)
			// Each attack uses up nearly all its targets: keep the first
			// 90% for the duplicate case (all of them were sent).
			if len(sent) < maxReplayed {
				sent = append(sent, ts[:len(ts)*9/10]...)
			}
			return ts, err
		},
	})
	if err != nil {
		return err
	}
	b.report.PushMinigate = mg
	countPushes := `SELECT count(*) FROM callbacks WHERE kind = 'messages'`
	stored, err := b.storedCount(ctx, countPushes)
	if err != nil {
		return err
	}
	if err := checkStored("pushes", stored, mg.OK); err != nil {
		return err
	}

	dup, err := b.runHTTP(ctx, httpCase{
		name: "duplicate message push → minigate", base: b.mg.url, pid: b.mg.pid, check: isSuccessAck, cycle: true, settle: true,
		gen: func(int) ([]vegeta.Target, error) { return sent, nil },
	})
	if err != nil {
		return err
	}
	b.report.PushDuplicate = dup
	after, err := b.storedCount(ctx, countPushes)
	if err != nil {
		return err
	}
	// The replayed pushes include the few whose first delivery failed
	// (those are new); no other may be stored again.
	if failed := int64(mg.Requests - mg.OK); after-stored > failed {
		return fmt.Errorf("bench: replaying pushes stored %d new ones; only %d had failed before", after-stored, failed)
	}
	logf("  checked: %d duplicates acknowledged, %d stored (pushes whose first delivery had failed)", dup.OK, after-stored)

	peer, err := startPeer(b.app)
	if err != nil {
		return err
	}
	peerGen := newPushGen(b.app, b.openIDs)
	pr, err := b.runHTTP(ctx, httpCase{
		name: "message push → silenceper PushReceiver on net/http (no storage)", base: peer.url,
		pid: peer.cmd.Process.Pid, check: isPeerAck, cycle: true,
		gen: func(n int) ([]vegeta.Target, error) { return peerGen.make(peer.url, min(n, 20000)) },
	})
	peer.stop()
	if err != nil {
		return err
	}
	b.report.PushPeer = pr

	ceiling := &pushCeiling{app: b.app.cfg.ID, db: b.ceil, river: b.ceilJob, openIDs: b.openIDs, msgBase: time.Now().Unix() << 24}
	lc, err := b.runLoop(ctx, "message push → database ceiling (same statements, Go loop)", workerLevels(mg), ceiling.op)
	if err != nil {
		return err
	}
	b.report.PushCeiling = lc
	return nil
}

func (b *bench) notifyCases(ctx context.Context) error {
	gen := newNotifyGen(b.app)
	mg, err := b.runHTTP(ctx, httpCase{
		name: "WeChat Pay notification → minigate", base: b.mg.url, pid: b.mg.pid, check: isNotifyAck, half: true, settle: true,
		gen: func(n int) ([]vegeta.Target, error) {
			os, err := seedOrders(ctx, b.pool, b.app.cfg.ID, b.openIDs, n)
			if err != nil {
				return nil, err
			}
			return gen.make(b.mg.url, os, 2)
		},
	})
	if err != nil {
		return err
	}
	b.report.NotifyMinigate = mg
	paid, err := b.storedCount(ctx, `SELECT count(*) FROM orders WHERE status = 'paid'`)
	if err != nil {
		return err
	}
	if err := checkStored("notifications (paid orders)", paid, mg.OK); err != nil {
		return err
	}

	levels := workerLevels(mg)
	secs := float64(len(levels))*b.o.plan.Step.Seconds() + float64(b.o.runs)*b.o.measure.Seconds()
	n := max(20000, int(4*mg.Throughput*secs))
	logf("seeding %d orders for the notification ceiling", n)
	seededOrders, err := seedOrders(ctx, b.ceil, b.app.cfg.ID, b.openIDs, n)
	if err != nil {
		return err
	}
	ceiling := &notifyCeiling{app: b.app.cfg.ID, db: b.ceil, river: b.ceilJob, orders: seededOrders}
	lc, err := b.runLoop(ctx, "WeChat Pay notification → database ceiling (same transaction, Go loop)", levels, ceiling.op)
	if err != nil {
		return err
	}
	b.report.NotifyCeiling = lc
	return nil
}

func (b *bench) orderCases(ctx context.Context) error {
	gen := newOrderGen(b.app.cfg.ID, b.openIDs)
	mg, err := b.runHTTP(ctx, httpCase{
		name: "order creation → minigate", base: b.mg.url, pid: b.mg.pid, check: isOrderCreated, settle: true,
		gen: func(n int) ([]vegeta.Target, error) { return gen.make(b.mg.url, n), nil },
	})
	if err != nil {
		return err
	}
	b.report.OrdersMinigate = mg
	prepaid, err := b.storedCount(ctx, `SELECT count(*) FROM orders WHERE prepay_id <> ''`)
	if err != nil {
		return err
	}
	if err := checkStored("orders (prepaid)", prepaid, mg.OK); err != nil {
		return err
	}
	sdk, err := newSDKLoop(ctx, b.app, b.sim.url, b.mg.url+"/callbacks/"+b.app.cfg.ID+"/payments", b.openIDs)
	if err != nil {
		return err
	}
	lc, err := b.runLoop(ctx, "order creation → wechatpay-go loop (prepay + request-payment signing, no storage)", workerLevels(mg), sdk.op)
	if err != nil {
		return err
	}
	b.report.OrdersSDK = lc
	return nil
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
			return n, time.Since(start).Round(100 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
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
