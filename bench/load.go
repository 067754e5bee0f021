package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// targets hands out pre-built requests, each once (or round-robin with
// cycle), so that signing and encrypting them is not part of the measured
// window.
type targets struct {
	list  []vegeta.Target
	cycle bool
	next  atomic.Int64
}

func (t *targets) targeter() vegeta.Targeter {
	return func(tgt *vegeta.Target) error {
		i := int(t.next.Add(1) - 1)
		if t.cycle && len(t.list) > 0 {
			i %= len(t.list)
		}
		if i >= len(t.list) {
			return vegeta.ErrNoTargets
		}
		*tgt = t.list[i]
		return nil
	}
}

// attackResult summarises one constant-rate attack.
type attackResult struct {
	// Rate is the requested rate (requests/s).
	Rate float64 `json:"rate"`
	// Sent is the rate at which requests actually went out; well below
	// Rate means the load generator, not the target, was the limit.
	Sent float64 `json:"sent"`
	// Throughput is successful responses per second, including the wait
	// for the last responses.
	Throughput float64 `json:"throughput"`
	Success    float64 `json:"success"`
	Requests   uint64  `json:"requests"`
	// OK counts the successful requests.
	OK     uint64         `json:"ok"`
	Mean   time.Duration  `json:"mean"`
	P50    time.Duration  `json:"p50"`
	P99    time.Duration  `json:"p99"`
	Max    time.Duration  `json:"max"`
	Codes  map[string]int `json:"codes"`
	Errors []string       `json:"errors,omitempty"`
	// Backlog is how long minigate took, after the attack's last answer,
	// to deliver the events the attack's callbacks published (zero for
	// the peer). A rate whose deliveries fall behind is not sustainable,
	// however quickly the callbacks themselves were answered.
	Backlog time.Duration `json:"backlog,omitempty"`
}

func (r attackResult) String() string {
	return fmt.Sprintf("rate %6.0f/s  sent %6.0f/s  ok %6.0f/s  success %5.1f%%  p50 %7s  p99 %7s  max %7s  backlog %4s",
		r.Rate, r.Sent, r.Throughput, 100*r.Success, roundDur(r.P50), roundDur(r.P99), roundDur(r.Max), r.Backlog)
}

// sustained reports whether the target kept up with r's rate: (almost)
// every request succeeded, the responses kept pace with the requests, the
// tail latency stayed bounded, and the event deliveries kept pace too.
func (r attackResult) sustained(p rampPlan) bool {
	return r.Success >= 0.99 && r.Throughput >= 0.95*r.Rate && r.P99 <= p.MaxP99 && r.Backlog <= p.MaxBacklog
}

// loader runs constant-rate attacks with vegeta. Vegeta starts a new
// worker whenever all are busy when a request is due, so requests leave on
// schedule however slowly the target answers: latencies are measured from
// the moment a request was due, without coordinated omission.
type loader struct {
	client *http.Client
}

func newLoader() *loader {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 10000,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	// Answers after 10 s count as failures: the platforms give up after 5.
	return &loader{client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// attack sends tr's requests at rate per second for d. check, when set,
// decides which 2xx answers count as successes (e.g. the exact ack body).
func (l *loader) attack(tr vegeta.Targeter, rate float64, d time.Duration, check func(*vegeta.Result) bool) attackResult {
	// A fresh Attacker per attack (one is spent when its attack ends),
	// sharing the client and so its warm connections.
	atk := vegeta.NewAttacker(vegeta.Client(l.client), vegeta.Workers(uint64(max(1, rate/200))), vegeta.MaxBody(4<<10))
	pacer := vegeta.ConstantPacer{Freq: max(1, int(math.Round(rate))), Per: time.Second}
	var m vegeta.Metrics
	for res := range atk.Attack(tr, pacer, d, "bench") {
		if check != nil && res.Code >= 200 && res.Code < 300 && !check(res) {
			res.Code, res.Error = 0, "unexpected answer: "+truncate(string(res.Body), 80)
		}
		res.Body, res.Headers = nil, nil
		m.Add(res)
	}
	m.Close()
	codes := map[string]int{}
	for k, v := range m.StatusCodes {
		codes[k] = v
	}
	errs := m.Errors
	if len(errs) > 5 {
		errs = errs[:5]
	}
	return attackResult{
		Rate: float64(pacer.Freq), Sent: m.Rate, Throughput: m.Throughput, Success: m.Success,
		Requests: m.Requests, OK: uint64(math.Round(m.Success * float64(m.Requests))), Mean: m.Latencies.Mean, P50: m.Latencies.P50, P99: m.Latencies.P99, Max: m.Latencies.Max,
		Codes: codes, Errors: errs,
	}
}

// rampPlan is how the saturating rate is searched for.
type rampPlan struct {
	Start, Factor, Max float64
	Step               time.Duration
	// Pause lets queues drain between steps.
	Pause  time.Duration
	MaxP99 time.Duration
	// MaxBacklog bounds attackResult.Backlog for a sustained step.
	MaxBacklog time.Duration
}

// minRate is the lowest rate a ramp starts at.
const minRate = 5

// ramp raises the rate step by step (each step a short constant-rate
// attack from try) until one is not sustained, then tries once between the
// last sustained rate and the first failed one; a step counts as failed
// when it is not sustained twice in a row. When the first step is not
// sustained it starts again lower (down to minRate). It returns the highest
// sustained rate and every step.
func ramp(p rampPlan, try func(rate float64, d time.Duration) (attackResult, error), logf func(string, ...any)) (float64, []attackResult, error) {
	var steps []attackResult
	// A step that is not sustained is tried once more before it counts:
	// on a shared machine a stall elsewhere can sink one short step.
	step := func(rate float64) (bool, error) {
		for range 2 {
			r, err := try(rate, p.Step)
			if err != nil {
				return false, err
			}
			steps = append(steps, r)
			ok := r.sustained(p)
			logf("  ramp %s %s", r, okMark(ok))
			time.Sleep(p.Pause)
			if ok {
				return true, nil
			}
		}
		return false, nil
	}
	best := 0.0
	for rate := p.Start; rate >= minRate; rate /= p.Factor * p.Factor {
		ok, err := step(math.Round(rate))
		if err != nil {
			return 0, steps, err
		}
		if ok {
			best = math.Round(rate)
			break
		}
	}
	if best == 0 {
		return 0, steps, fmt.Errorf("bench: not even %d/s was sustained", minRate)
	}
	failed := 0.0
	for rate := best * p.Factor; rate <= p.Max; rate *= p.Factor {
		ok, err := step(math.Round(rate))
		if err != nil {
			return 0, steps, err
		}
		if !ok {
			failed = math.Round(rate)
			break
		}
		best = math.Round(rate)
	}
	if mid := math.Round(math.Sqrt(best * failed)); failed > 0 && mid > best && mid < failed {
		ok, err := step(mid)
		if err != nil {
			return 0, steps, err
		}
		if ok {
			best = mid
		}
	}
	return best, steps, nil
}

func okMark(ok bool) string {
	if ok {
		return "sustained"
	}
	return "NOT sustained"
}

// loopResult is a closed-loop measurement: workers each run an operation
// back to back.
type loopResult struct {
	Workers    int     `json:"workers"`
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	Throughput float64 `json:"throughput"`
	FirstError string  `json:"first_error,omitempty"`
}

func (r loopResult) String() string {
	s := fmt.Sprintf("workers %3d  ok %6.0f/s  (%d ops, %d errors)", r.Workers, r.Throughput, r.Ops, r.Errors)
	if r.FirstError != "" {
		s += "  first error: " + truncate(r.FirstError, 120)
	}
	return s
}

// loop runs op with workers goroutines for d; seq numbers the calls
// across all workers (so each can do new work).
func loop(ctx context.Context, workers int, d time.Duration, seq *atomic.Int64, op func(ctx context.Context, n int64) error) loopResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ok, bad atomic.Int64
	var firstErr sync.Once
	res := loopResult{Workers: workers}
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				err := op(ctx, seq.Add(1))
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() != nil:
					// cut short by the end of the measurement
				default:
					bad.Add(1)
					firstErr.Do(func() { res.FirstError = err.Error() })
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Ops, res.Errors = ok.Load(), bad.Load()
	res.Throughput = float64(res.Ops) / elapsed.Seconds()
	return res
}

// bestWorkers probes each worker count for d and returns the one with the
// highest throughput.
func bestWorkers(ctx context.Context, levels []int, d time.Duration, seq *atomic.Int64, op func(ctx context.Context, n int64) error, logf func(string, ...any)) (int, error) {
	best, bestTP := 0, -1.0
	for _, w := range levels {
		r := loop(ctx, w, d, seq, op)
		logf("  probe %s", r)
		if r.Errors > 0 && r.Ops == 0 {
			return 0, fmt.Errorf("bench: every operation failed: %s", r.FirstError)
		}
		if r.Throughput > bestTP {
			best, bestTP = w, r.Throughput
		}
	}
	return best, nil
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianDur is median for durations.
func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d.Round(10 * time.Microsecond)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
