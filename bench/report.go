package main

import (
	"fmt"
	"strings"
	"time"
)

// platformLimit is how long WeChat, QQ, Alipay and WeChat Pay wait for an
// acknowledgement before they count a callback as failed.
const platformLimit = 5 * time.Second

// Targets from issue 7.
const (
	targetVsPeer    = 0.50
	targetVsCeiling = 0.60
	targetVsSDK     = 0.80
	targetP99       = 50 * time.Millisecond
)

// report is everything one run measured.
type report struct {
	Command    string    `json:"command"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	Machine    Machine   `json:"machine"`
	MemoryNote string    `json:"memory_note"`

	PushMinigate   *caseResult `json:"push_minigate,omitempty"`
	PushDuplicate  *caseResult `json:"push_duplicate,omitempty"`
	PushPeer       *caseResult `json:"push_peer,omitempty"`
	PushCeiling    *loopCase   `json:"push_ceiling,omitempty"`
	NotifyMinigate *caseResult `json:"notify_minigate,omitempty"`
	NotifyCeiling  *loopCase   `json:"notify_ceiling,omitempty"`
	OrdersMinigate *caseResult `json:"orders_minigate,omitempty"`
	OrdersSDK      *loopCase   `json:"orders_sdk,omitempty"`
	Delivery       delivery    `json:"event_delivery"`
}

// row is one line of the table.
type row struct {
	n, what, minigate, against, ratio, target string
	met                                       bool
}

func ratioRow(n, what string, mg float64, against string, peer, target float64) row {
	r := row{n: n, what: what, minigate: rate(mg), against: against + ": " + rate(peer), target: fmt.Sprintf("≥ %.0f%%", 100*target)}
	if peer > 0 {
		q := mg / peer
		r.ratio, r.met = fmt.Sprintf("%.0f%%", 100*q), q >= target
	}
	return r
}

func latencyRow(n, what string, c *caseResult) row {
	return row{
		n: n, what: fmt.Sprintf("%s at %.0f/s (half of %.0f/s)", what, c.Saturating/2, c.Saturating),
		minigate: fmt.Sprintf("%s / %s", ms(c.P50), ms(c.P99)), against: "the 5 s platform limit",
		ratio:  fmt.Sprintf("p99 = %.2f%% of it", 100*float64(c.P99)/float64(platformLimit)),
		target: "p99 ≤ " + ms(targetP99), met: c.P99 <= targetP99,
	}
}

func (r *report) rows() []row {
	var rows []row
	if r.PushMinigate != nil && r.PushPeer != nil {
		rows = append(rows, ratioRow("1", "message-push ingest (safe mode, verified, decrypted, durably de-duplicated), callbacks/s",
			r.PushMinigate.Throughput, "silenceper `PushReceiver` on net/http, no storage", r.PushPeer.Throughput, targetVsPeer))
	}
	if r.PushDuplicate != nil && r.PushPeer != nil {
		x := ratioRow("1b", "message-push duplicates (verified, decrypted, found already stored), callbacks/s",
			r.PushDuplicate.Throughput, "the same peer", r.PushPeer.Throughput, 0)
		x.target, x.met = "—", true
		rows = append(rows, x)
	}
	if r.PushMinigate != nil && r.PushCeiling != nil {
		rows = append(rows, ratioRow("2", "message-push ingest, callbacks/s", r.PushMinigate.Throughput,
			fmt.Sprintf("database ceiling: the same statements from a Go loop (%d workers)", r.PushCeiling.Workers),
			r.PushCeiling.Throughput, targetVsCeiling))
	}
	if r.NotifyMinigate != nil && r.NotifyCeiling != nil {
		rows = append(rows, ratioRow("3", "WeChat Pay notify ingest (verify, decrypt, state move, event job), notifications/s",
			r.NotifyMinigate.Throughput, fmt.Sprintf("database ceiling: the same transaction from a Go loop (%d workers)", r.NotifyCeiling.Workers),
			r.NotifyCeiling.Throughput, targetVsCeiling))
	}
	if r.OrdersMinigate != nil && r.OrdersSDK != nil {
		rows = append(rows, ratioRow("4", "order creation (idempotency, prepay through the simulator, pay params), orders/s",
			r.OrdersMinigate.Throughput, fmt.Sprintf("wechatpay-go `PrepayWithRequestPayment` loop, same simulator, no storage (%d workers)", r.OrdersSDK.Workers),
			r.OrdersSDK.Throughput, targetVsSDK))
	}
	if r.PushMinigate != nil {
		rows = append(rows, latencyRow("5a", "ack latency p50 / p99, message push", r.PushMinigate))
	}
	if r.NotifyMinigate != nil {
		rows = append(rows, latencyRow("5b", "ack latency p50 / p99, WeChat Pay notify", r.NotifyMinigate))
	}
	return rows
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| # | row | minigate | against | ratio | target | |\n|---|---|---:|---|---:|---|---|\n")
	for _, x := range r.rows() {
		mark := "missed"
		switch {
		case x.target == "—":
			mark = "(no target)"
		case x.met:
			mark = "met"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", x.n, x.what, x.minigate, x.against, x.ratio, x.target, mark)
	}
	m := r.Machine
	fmt.Fprintf(&b, "\nMedian of %d runs per case. Machine: %s, %d cores, %d MiB RAM, Linux %s, %s, %s.\n",
		r.runs(), m.CPU, m.Cores, m.MemoryMiB, m.Kernel, m.Go, m.Postgres)
	fmt.Fprintf(&b, "Load average (1/5/15 min): %s at the start, %s at the end. Run: %s, %s.\n",
		m.LoadStart, m.LoadEnd, r.Started.Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(&b, "Command: `%s`.\n", r.Command)

	fmt.Fprintf(&b, "\n| case | saturating rate | measured runs (ok/s) | median | latency at half rate (p50 / p99) | peak memory |\n|---|---:|---|---:|---|---:|\n")
	for _, c := range []*caseResult{r.PushMinigate, r.PushDuplicate, r.PushPeer, r.NotifyMinigate, r.OrdersMinigate} {
		if c == nil {
			continue
		}
		var runs []string
		for _, x := range c.Runs {
			runs = append(runs, fmt.Sprintf("%.0f", x.Throughput))
		}
		lat := "—"
		if len(c.Half) > 0 {
			lat = ms(c.P50) + " / " + ms(c.P99)
		}
		fmt.Fprintf(&b, "| %s | %.0f/s | %s | %s | %s | %s |\n", c.Name, c.Saturating, strings.Join(runs, ", "), rate(c.Throughput), lat, mib(c.PeakRSS))
	}
	for _, c := range []*loopCase{r.PushCeiling, r.NotifyCeiling, r.OrdersSDK} {
		if c == nil {
			continue
		}
		var runs []string
		for _, x := range c.Runs {
			runs = append(runs, fmt.Sprintf("%.0f", x.Throughput))
		}
		fmt.Fprintf(&b, "| %s | closed loop, %d workers | %s | %s | — | — |\n", c.Name, c.Workers, strings.Join(runs, ", "), rate(c.Throughput))
	}
	fmt.Fprintf(&b, "\nCPU time per successful request during the measured runs (ms, from /proc):\n\n"+
		"| case | minigate | bench process (vegeta, simulator, loop) | peer | Postgres and the rest of the machine | total |\n|---|---:|---:|---:|---:|---:|\n")
	cpuRow := func(name string, c cpuUse) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", name, cpuMS(c.Minigate), cpuMS(c.Bench), cpuMS(c.Peer), cpuMS(c.Rest),
			cpuMS(c.Minigate+c.Rest+c.Bench+c.Peer))
	}
	for _, c := range []*caseResult{r.PushMinigate, r.PushDuplicate, r.PushPeer, r.NotifyMinigate, r.OrdersMinigate} {
		if c != nil {
			cpuRow(c.Name, c.CPUPerOK)
		}
	}
	for _, c := range []*loopCase{r.PushCeiling, r.NotifyCeiling, r.OrdersSDK} {
		if c != nil {
			cpuRow(c.Name, c.CPUPerOK)
		}
	}
	fmt.Fprintf(&b, "\nMemory: %s. Events: %d delivered to the receiver during the run, %d still pending %s after the last case.\n",
		r.MemoryNote, r.Delivery.Delivered, r.Delivery.Pending, r.Delivery.Waited)
	return b.String()
}

func (r *report) runs() int {
	for _, c := range []*caseResult{r.PushMinigate, r.NotifyMinigate, r.OrdersMinigate} {
		if c != nil {
			return len(c.Runs)
		}
	}
	return 0
}

func cpuMS(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

func rate(v float64) string { return fmt.Sprintf("%.0f/s", v) }

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func mib(n int64) string {
	if n <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}
