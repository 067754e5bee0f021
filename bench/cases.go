package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The cases of each row are measured in alternation — a minigate run, then
// a run of what it is compared with, then the next minigate run — so that
// both sides of a ratio see the same machine, even when something else on
// it changes during the run.

// httpCase is one server under constant-rate load.
type httpCase struct {
	name  string
	base  string
	pid   int
	gen   func(n int) ([]vegeta.Target, error)
	cycle bool
	check func(*vegeta.Result) bool
}

// caseResult is what an httpRun measured.
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
	// CPU is the CPU time the processes used during the measured runs
	// at the saturating rate; CPUPerOK divides it by their successes.
	CPU      cpuUse `json:"cpu"`
	CPUPerOK cpuUse `json:"cpu_per_ok"`
	// atSaturation is the ramp step at the saturating rate.
	atSaturation attackResult
}

// httpRun measures one httpCase: a ramp to its saturating rate, then runs
// there (run) and at half of it (half), one at a time.
type httpRun struct {
	b        *bench
	ctx      context.Context
	c        httpCase
	res      *caseResult
	rssReset bool
	// lastCPU is what the last attack used.
	lastCPU cpuUse
}

// rampHTTP finds c's saturating rate.
func (b *bench) rampHTTP(ctx context.Context, c httpCase) (*httpRun, error) {
	logf("%s", c.name)
	h := &httpRun{b: b, ctx: ctx, c: c, res: &caseResult{Name: c.name}, rssReset: resetPeakRSS(c.pid)}
	sat, steps, err := ramp(b.o.plan, h.try, logf)
	h.res.Saturating, h.res.Ramp = sat, steps
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	for _, s := range steps {
		if s.Rate == sat && s.sustained(b.o.plan) {
			h.res.atSaturation = s
		}
	}
	logf("  saturating rate %.0f/s", sat)
	return h, nil
}

// try is one attack at rate for d, with fresh requests.
func (h *httpRun) try(rate float64, d time.Duration) (attackResult, error) {
	h.b.settle(h.ctx)
	ts, err := h.c.gen(int(rate*d.Seconds()*1.02) + 10)
	if err != nil {
		return attackResult{}, err
	}
	before := h.b.cpu(h.c.pid)
	r := h.b.loader.attack((&targets{list: ts, cycle: h.c.cycle}).targeter(), rate, d, h.c.check)
	if h.c.pid == h.b.mg.pid {
		_, r.Backlog = h.b.waitDelivered(h.ctx, settleLimit)
	}
	// The CPU of the deliveries that finish after the attack counts too.
	h.lastCPU = h.b.cpu(h.c.pid).sub(before)
	h.res.Requests, h.res.OK = h.res.Requests+r.Requests, h.res.OK+r.OK
	return r, nil
}

// run is one measured run at the saturating rate.
func (h *httpRun) run() error {
	r, err := h.try(h.res.Saturating, h.b.o.measure)
	if err != nil {
		return err
	}
	logf("  %-8s run  %s", h.short(), r)
	h.res.Runs = append(h.res.Runs, r)
	h.res.CPU = h.res.CPU.add(h.lastCPU)
	return nil
}

// half is one measured run at half the saturating rate.
func (h *httpRun) half() error {
	r, err := h.try(max(1, h.res.Saturating/2), h.b.o.measure)
	if err != nil {
		return err
	}
	logf("  %-8s half %s", h.short(), r)
	h.res.Half = append(h.res.Half, r)
	return nil
}

func (h *httpRun) short() string {
	if h.c.pid == h.b.mg.pid {
		return "minigate"
	}
	return "peer"
}

// finish computes the medians and reads the peak memory.
func (h *httpRun) finish() *caseResult {
	res := h.res
	var tps []float64
	for _, r := range res.Runs {
		tps = append(tps, r.Throughput)
	}
	res.Throughput = median(tps)
	var p50s, p99s []time.Duration
	for _, r := range res.Half {
		p50s, p99s = append(p50s, r.P50), append(p99s, r.P99)
	}
	res.P50, res.P99 = medianDur(p50s), medianDur(p99s)
	var ok uint64
	for _, r := range res.Runs {
		ok += r.OK
	}
	res.CPUPerOK = res.CPU.per(ok)
	if h.rssReset || h.c.pid != h.b.mg.pid {
		res.PeakRSS = peakRSS(h.c.pid)
	}
	return res
}

// loopCase is a closed-loop measurement (database ceilings, the SDK loop).
type loopCase struct {
	Name       string       `json:"name"`
	Workers    int          `json:"workers"`
	Runs       []loopResult `json:"runs"`
	Throughput float64      `json:"throughput"`
	// CPU and CPUPerOK as in caseResult.
	CPU      cpuUse `json:"cpu"`
	CPUPerOK cpuUse `json:"cpu_per_ok"`
}

// loopRun measures one closed loop: a probe of worker counts, then runs at
// the best one.
type loopRun struct {
	b   *bench
	ctx context.Context
	op  func(ctx context.Context, n int64) error
	seq atomic.Int64
	lc  *loopCase
}

// probeLoop finds the best worker count among levels.
func (b *bench) probeLoop(ctx context.Context, name string, levels []int, op func(ctx context.Context, n int64) error) (*loopRun, error) {
	logf("%s", name)
	l := &loopRun{b: b, ctx: ctx, op: op, lc: &loopCase{Name: name}}
	b.settle(ctx)
	w, err := bestWorkers(ctx, levels, b.o.plan.Step, &l.seq, op, logf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	l.lc.Workers = w
	return l, nil
}

// run is one measured run.
func (l *loopRun) run() error {
	l.b.settle(l.ctx)
	before := l.b.cpu(0)
	r := loop(l.ctx, l.lc.Workers, l.b.o.measure, &l.seq, l.op)
	l.lc.CPU = l.lc.CPU.add(l.b.cpu(0).sub(before))
	logf("  %-8s run  %s", "loop", r)
	if r.Errors > 0 {
		return fmt.Errorf("bench: %s: %d operations failed: %s", l.lc.Name, r.Errors, r.FirstError)
	}
	l.lc.Runs = append(l.lc.Runs, r)
	return nil
}

func (l *loopRun) finish() *loopCase {
	var tps []float64
	for _, r := range l.lc.Runs {
		tps = append(tps, r.Throughput)
	}
	l.lc.Throughput = median(tps)
	var ok int64
	for _, r := range l.lc.Runs {
		ok += r.Ops
	}
	l.lc.CPUPerOK = l.lc.CPU.per(uint64(ok))
	return l.lc
}

// alternate runs each of steps in turn, o.runs times.
func (b *bench) alternate(steps ...func() error) error {
	for range b.o.runs {
		for _, s := range steps {
			if err := s(); err != nil {
				return err
			}
			time.Sleep(b.o.plan.Pause)
		}
	}
	return nil
}

// cpu samples the processes' CPU time; pid is the server under load when
// it is not minigate (the peer).
func (b *bench) cpu(pid int) cpuUse {
	peer := 0
	if pid != b.mg.pid {
		peer = pid
	}
	return sampleCPU(b.mg.pid, peer)
}

// settle waits until minigate has delivered the events of earlier attacks,
// so that no measurement shares the machine with a delivery backlog.
func (b *bench) settle(ctx context.Context) {
	if pending, waited := b.waitDelivered(ctx, settleLimit); pending > 0 || waited > time.Second {
		logf("  waited %s for event deliveries (%d still pending)", waited, pending)
	}
}

// workerLevels are the concurrencies a loop is probed at: powers of two
// and the concurrency minigate itself ran at when saturated (Little's law:
// throughput × mean latency).
func workerLevels(at attackResult) []int {
	levels := []int{4, 8, 16, 32}
	l := int(at.Throughput*at.Mean.Seconds() + 0.5)
	if l >= 1 && l <= 64 && !slices.Contains(levels, l) {
		levels = append(levels, l)
		slices.Sort(levels)
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

// pushCases measures rows 1, 1b, 2 and 5a.
func (b *bench) pushCases(ctx context.Context) error {
	gen := newPushGen(b.app, b.openIDs)
	var sent []vegeta.Target
	mg, err := b.rampHTTP(ctx, httpCase{
		name: "message push → minigate", base: b.mg.url, pid: b.mg.pid, check: isSuccessAck,
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
	peer, err := startPeer(b.app)
	if err != nil {
		return err
	}
	defer peer.stop()
	peerGen := newPushGen(b.app, b.openIDs)
	pr, err := b.rampHTTP(ctx, httpCase{
		name: "message push → silenceper PushReceiver on net/http (no storage)", base: peer.url,
		pid: peer.cmd.Process.Pid, check: isPeerAck, cycle: true,
		gen: func(n int) ([]vegeta.Target, error) { return peerGen.make(peer.url, min(n, 20000)) },
	})
	if err != nil {
		return err
	}
	ceiling := &pushCeiling{app: b.app.cfg.ID, db: b.ceil, river: b.ceilJob, openIDs: b.openIDs, msgBase: time.Now().Unix() << 24}
	cl, err := b.probeLoop(ctx, "message push → database ceiling (same statements, Go loop)", workerLevels(mg.res.atSaturation), ceiling.op)
	if err != nil {
		return err
	}
	logf("message push: minigate, peer and ceiling in turn")
	if err := b.alternate(mg.run, pr.run, cl.run); err != nil {
		return err
	}
	if err := b.alternate(mg.half); err != nil {
		return err
	}
	b.report.PushMinigate, b.report.PushPeer, b.report.PushCeiling = mg.finish(), pr.finish(), cl.finish()
	countPushes := `SELECT count(*) FROM callbacks WHERE kind = 'messages'`
	stored, err := b.storedCount(ctx, countPushes)
	if err != nil {
		return err
	}
	if err := checkStored("pushes", stored, mg.res.OK); err != nil {
		return err
	}

	dup, err := b.rampHTTP(ctx, httpCase{
		name: "duplicate message push → minigate", base: b.mg.url, pid: b.mg.pid, check: isSuccessAck, cycle: true,
		gen: func(int) ([]vegeta.Target, error) { return sent, nil },
	})
	if err != nil {
		return err
	}
	if err := b.alternate(dup.run); err != nil {
		return err
	}
	b.report.PushDuplicate = dup.finish()
	after, err := b.storedCount(ctx, countPushes)
	if err != nil {
		return err
	}
	// The replayed pushes include the few whose first delivery failed
	// (those are new); no other may be stored again.
	if failed := int64(mg.res.Requests - mg.res.OK); after-stored > failed {
		return fmt.Errorf("bench: replaying pushes stored %d new ones; only %d had failed before", after-stored, failed)
	}
	logf("  checked: %d duplicates acknowledged, %d stored (pushes whose first delivery had failed)", dup.res.OK, after-stored)
	return nil
}

// notifyCases measures rows 3 and 5b.
func (b *bench) notifyCases(ctx context.Context) error {
	gen := newNotifyGen(b.app)
	mg, err := b.rampHTTP(ctx, httpCase{
		name: "WeChat Pay notification → minigate", base: b.mg.url, pid: b.mg.pid, check: isNotifyAck,
		gen: func(n int) ([]vegeta.Target, error) {
			batch, err := seedOrders(ctx, b.pool, b.app.cfg.ID, b.openIDs, n)
			if err != nil {
				return nil, err
			}
			return gen.make(b.mg.url, batch, 2)
		},
	})
	if err != nil {
		return err
	}
	levels := workerLevels(mg.res.atSaturation)
	secs := float64(len(levels))*b.o.plan.Step.Seconds() + float64(b.o.runs)*b.o.measure.Seconds()
	n := max(20000, int(4*mg.res.Saturating*secs))
	logf("seeding %d orders for the notification ceiling", n)
	seededOrders, err := seedOrders(ctx, b.ceil, b.app.cfg.ID, b.openIDs, n)
	if err != nil {
		return err
	}
	ceiling := &notifyCeiling{app: b.app.cfg.ID, db: b.ceil, river: b.ceilJob, orders: seededOrders}
	cl, err := b.probeLoop(ctx, "WeChat Pay notification → database ceiling (same transaction, Go loop)", levels, ceiling.op)
	if err != nil {
		return err
	}
	logf("WeChat Pay notification: minigate and ceiling in turn")
	if err := b.alternate(mg.run, cl.run); err != nil {
		return err
	}
	if err := b.alternate(mg.half); err != nil {
		return err
	}
	b.report.NotifyMinigate, b.report.NotifyCeiling = mg.finish(), cl.finish()
	paid, err := b.storedCount(ctx, `SELECT count(*) FROM orders WHERE status = 'paid'`)
	if err != nil {
		return err
	}
	return checkStored("notifications (paid orders)", paid, mg.res.OK)
}

// orderCases measures row 4.
func (b *bench) orderCases(ctx context.Context) error {
	gen := newOrderGen(b.app.cfg.ID, b.openIDs)
	mg, err := b.rampHTTP(ctx, httpCase{
		name: "order creation → minigate", base: b.mg.url, pid: b.mg.pid, check: isOrderCreated,
		gen: func(n int) ([]vegeta.Target, error) { return gen.make(b.mg.url, n), nil },
	})
	if err != nil {
		return err
	}
	sdk, err := newSDKLoop(ctx, b.app, b.sim.url, b.mg.url+"/callbacks/"+b.app.cfg.ID+"/payments", b.openIDs)
	if err != nil {
		return err
	}
	sl, err := b.probeLoop(ctx, "order creation → wechatpay-go loop (prepay + request-payment signing, no storage)",
		workerLevels(mg.res.atSaturation), sdk.op)
	if err != nil {
		return err
	}
	logf("order creation: minigate and the SDK loop in turn")
	if err := b.alternate(mg.run, sl.run); err != nil {
		return err
	}
	b.report.OrdersMinigate, b.report.OrdersSDK = mg.finish(), sl.finish()
	prepaid, err := b.storedCount(ctx, `SELECT count(*) FROM orders WHERE prepay_id <> ''`)
	if err != nil {
		return err
	}
	return checkStored("orders (prepaid)", prepaid, mg.res.OK)
}
