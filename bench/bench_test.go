package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

func TestTargeter(t *testing.T) {
	t.Parallel()
	list := []vegeta.Target{{URL: "a"}, {URL: "b"}}
	for _, tc := range []struct {
		name  string
		cycle bool
		want  []string // "" marks ErrNoTargets
	}{
		{"once", false, []string{"a", "b", "", ""}},
		{"cycle", true, []string{"a", "b", "a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := (&targets{list: list, cycle: tc.cycle}).targeter()
			for i, want := range tc.want {
				var got vegeta.Target
				err := tr(&got)
				switch {
				case want == "" && !errors.Is(err, vegeta.ErrNoTargets):
					t.Fatalf("call %d: err %v, want ErrNoTargets", i, err)
				case want != "" && (err != nil || got.URL != want):
					t.Fatalf("call %d: %q, %v; want %q", i, got.URL, err, want)
				}
			}
		})
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := medianDur([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}); got != 2*time.Millisecond {
		t.Errorf("medianDur = %v", got)
	}
}

// fakeServer sustains any rate up to capacity and falls behind above it.
func fakeServer(capacity float64, tried *[]float64) func(float64, time.Duration) (attackResult, error) {
	return func(rate float64, d time.Duration) (attackResult, error) {
		*tried = append(*tried, rate)
		r := attackResult{Rate: rate, Sent: rate, Success: 1, Throughput: rate, P99: time.Millisecond}
		if rate > capacity {
			r.Throughput, r.P99 = capacity, 2*time.Second
		}
		return r, nil
	}
}

func TestRamp(t *testing.T) {
	t.Parallel()
	plan := rampPlan{Start: 100, Factor: 2, Max: 100000, MaxP99: 500 * time.Millisecond, MaxBacklog: time.Second}
	for _, tc := range []struct {
		name     string
		capacity float64
		want     float64
		wantErr  bool
	}{
		// 100, 200, 400 pass, 800 fails; the refinement tries 566 (passes).
		{"refined between steps", 600, 566, false},
		// 100, 200, 400 pass, 800 fails; 566 fails too.
		{"refinement fails", 500, 400, false},
		// 100 fails, 25 passes; 50 passes, 100 fails; 71 fails.
		{"below the first step", 50, 50, false},
		// 100, 25 and 6 fail; the next start would be below minRate.
		{"nothing sustained", 1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var tried []float64
			got, steps, err := ramp(plan, fakeServer(tc.capacity, &tried), t.Logf)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("saturating rate %v, want %v (tried %v)", got, tc.want, tried)
			}
			if len(steps) != len(tried) {
				t.Fatalf("%d steps reported for %d tried", len(steps), len(tried))
			}
			for i := 0; i < len(tried); i++ {
				if tried[i] <= tc.capacity {
					continue
				}
				if i+1 >= len(tried) || tried[i+1] != tried[i] {
					t.Fatalf("failed step %v not retried: %v", tried[i], tried)
				}
				i++
			}
		})
	}
}

func TestRampRetriesAStall(t *testing.T) {
	t.Parallel()
	var tried []float64
	inner := fakeServer(1000, &tried)
	stalled := false
	try := func(rate float64, d time.Duration) (attackResult, error) {
		r, err := inner(rate, d)
		if rate == 400 && !stalled { // one stall at 400/s
			stalled = true
			r.P99 = 3 * time.Second
		}
		return r, err
	}
	got, _, err := ramp(rampPlan{Start: 100, Factor: 2, Max: 100000, MaxP99: 500 * time.Millisecond, MaxBacklog: time.Second}, try, t.Logf)
	if err != nil || got < 800 {
		t.Fatalf("saturating rate %v, %v (tried %v); a single stall ended the ramp", got, err, tried)
	}
}

func TestSustained(t *testing.T) {
	t.Parallel()
	ok := attackResult{Rate: 100, Throughput: 99, Success: 1, P99: 10 * time.Millisecond}
	for _, tc := range []struct {
		name string
		edit func(*attackResult)
		want bool
	}{
		{"keeps up", func(*attackResult) {}, true},
		{"failures", func(r *attackResult) { r.Success = 0.98 }, false},
		{"falls behind", func(r *attackResult) { r.Throughput = 90 }, false},
		{"slow tail", func(r *attackResult) { r.P99 = time.Second }, false},
		{"deliveries keep pace", func(r *attackResult) { r.Backlog = 400 * time.Millisecond }, true},
		{"deliveries fall behind", func(r *attackResult) { r.Backlog = 2 * time.Second }, false},
	} {
		r := ok
		tc.edit(&r)
		if got := r.sustained(rampPlan{MaxP99: 500 * time.Millisecond, MaxBacklog: 500 * time.Millisecond}); got != tc.want {
			t.Errorf("%s: sustained = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLoop(t *testing.T) {
	t.Parallel()
	var seq atomic.Int64
	var mu sync.Mutex
	seen, dups := map[int64]bool{}, 0
	r := loop(context.Background(), 4, 200*time.Millisecond, &seq, func(ctx context.Context, n int64) error {
		mu.Lock()
		if seen[n] {
			dups++
		}
		seen[n] = true
		mu.Unlock()
		time.Sleep(time.Millisecond)
		if n%10 == 0 {
			return fmt.Errorf("op %d failed", n)
		}
		return nil
	})
	if r.Ops == 0 || r.Errors == 0 || !strings.Contains(r.FirstError, "failed") {
		t.Fatalf("loop = %+v, want successes and errors", r)
	}
	if r.Throughput <= 0 || r.Workers != 4 {
		t.Fatalf("loop = %+v", r)
	}
	if dups != 0 {
		t.Fatalf("%d sequence numbers handed out twice", dups)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, line, comm string
		cpu              time.Duration
		ok               bool
	}{
		{"postgres backend", "4242 (postgres) S 13356 13356 13356 0 -1 4194560 1091 0 0 0 250 37 0 0 20 0 1 0 1 2 3",
			"postgres", 287 * clockTick, true},
		{"spaces and parentheses in the name", "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0",
			"a (b) c", 11 * clockTick, true},
		{"truncated", "77 (x) R 1 2", "", 0, false},
		{"no name", "77 x R", "", 0, false},
	} {
		comm, cpu, ok := parseStat([]byte(tc.line))
		if comm != tc.comm || cpu != tc.cpu || ok != tc.ok {
			t.Errorf("%s: %q %v %v, want %q %v %v", tc.name, comm, cpu, ok, tc.comm, tc.cpu, tc.ok)
		}
	}
	// This process's own line parses; spin until it has used a tick.
	deadline := time.Now().Add(5 * time.Second)
	for x := uint64(1); procCPU(os.Getpid()) == 0; x = x*6364136223846793005 + 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no CPU time read for this process (%d)", x)
		}
	}
}

func TestMachineBusy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
	}{
		// user 100, nice 1, system 50, idle 900, iowait 20, irq 2, softirq 3, steal 4
		{"busy excludes idle and iowait", "cpu  100 1 50 900 20 2 3 4 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n", 160 * clockTick},
		{"not the total line", "cpu0 1 2 3 4 5 6 7 8 9 10\n", 0},
		{"short", "cpu 1 2 3\n", 0},
	} {
		if got := machineBusy([]byte(tc.stat)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCPUPer(t *testing.T) {
	t.Parallel()
	c := cpuUse{Minigate: 10 * time.Second, Rest: 4 * time.Second, Bench: 2 * time.Second}
	got := c.sub(cpuUse{Minigate: 2 * time.Second}).per(4000)
	want := cpuUse{Minigate: 2 * time.Millisecond, Rest: time.Millisecond, Bench: 500 * time.Microsecond}
	if got != want {
		t.Fatalf("per = %+v, want %+v", got, want)
	}
	if (cpuUse{Bench: time.Second}).per(0) != (cpuUse{}) {
		t.Fatal("per(0) is not zero")
	}
}

func TestWorkerLevels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		at   attackResult
		want []int
	}{
		// 500/s at a mean of 22 ms is 11 requests in flight.
		{"little's law", attackResult{Throughput: 500, Mean: 22 * time.Millisecond}, []int{4, 8, 11, 16, 32}},
		{"already a level", attackResult{Throughput: 400, Mean: 20 * time.Millisecond}, []int{4, 8, 16, 32}},
		{"no measurement", attackResult{}, []int{4, 8, 16, 32}},
		{"beyond the pool", attackResult{Throughput: 1000, Mean: time.Second}, []int{4, 8, 16, 32}},
	} {
		if got := workerLevels(tc.at); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: levels %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReportRows(t *testing.T) {
	t.Parallel()
	r := &report{
		PushMinigate:   &caseResult{Throughput: 300, Saturating: 320, P50: 3 * time.Millisecond, P99: 60 * time.Millisecond},
		PushPeer:       &caseResult{Throughput: 3000},
		PushCeiling:    &loopCase{Throughput: 400, Workers: 8},
		OrdersMinigate: &caseResult{Throughput: 90},
		OrdersSDK:      &loopCase{Throughput: 100, Workers: 16},
	}
	rows := map[string]row{}
	for _, x := range r.rows() {
		rows[x.n] = x
	}
	for _, tc := range []struct {
		n, ratio string
		met      bool
	}{
		{"1", "10%", false},
		{"2", "75%", true},
		{"4", "90%", true},
		{"5a", "p99 = 1.20% of it", false},
	} {
		x, ok := rows[tc.n]
		if !ok {
			t.Fatalf("no row %s in %v", tc.n, rows)
		}
		if x.ratio != tc.ratio || x.met != tc.met {
			t.Errorf("row %s: ratio %q met %v, want %q %v", tc.n, x.ratio, x.met, tc.ratio, tc.met)
		}
	}
	if _, ok := rows["3"]; ok {
		t.Error("row 3 without its measurements")
	}
	if md := r.markdown(); !strings.Contains(md, "| 2 | message-push ingest, callbacks/s | 300/s |") {
		t.Errorf("markdown lacks row 2:\n%s", md)
	}
}

// newTestApp generates a bench-like app with pooled keys.
func newTestApp(t *testing.T) *benchApp {
	t.Helper()
	sb, cfg, err := sandbox.NewAppPair(sandbox.AppSpec{ID: "bench-test", Platform: sandbox.WeChat, PublicURL: "http://127.0.0.1:1",
		MessageMode: sandbox.PushModeSafe, MessageFormat: sandbox.PushFormatXML, Pay: true, Key: testenv.Key})
	if err != nil {
		t.Fatal(err)
	}
	return &benchApp{sb: sb, cfg: cfg}
}

func request(tgt vegeta.Target) webhooks.Request {
	u, _ := url.Parse(tgt.URL)
	return webhooks.Request{Method: tgt.Method, Query: u.Query(), Header: tgt.Header.Clone(), Body: tgt.Body, ReceivedAt: time.Now()}
}

func send(t *testing.T, tgt vegeta.Target) (int, string) {
	t.Helper()
	req, err := tgt.Request()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestPushGen checks that generated pushes are what WeChat sends: minigate's
// codec and silenceper's receiver both accept them, every one is new, and
// the peer is no pushover (a forged signature is refused).
func TestPushGen(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	g := newPushGen(a, []string{"oUserA", "oUserB"})
	ts, err := g.make("http://127.0.0.1:1", 3)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := wechat.NewMessageCodec(a.cfg.AppID, a.cfg.Messages.Token, a.cfg.Messages.EncodingAESKey, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]bool{}
	for _, tgt := range ts {
		if !strings.Contains(tgt.URL, "/callbacks/bench-test/messages?") {
			t.Fatalf("url %s", tgt.URL)
		}
		msg, err := codec.OpenMessage(request(tgt))
		if err != nil {
			t.Fatalf("minigate's codec refuses a generated push: %v", err)
		}
		if msg.MsgType != "text" || !strings.Contains(msg.Content, "订单") || msg.FromUserName == "" {
			t.Fatalf("opened %+v", msg)
		}
		ids[msg.MsgID] = true
	}
	if len(ids) != len(ts) {
		t.Fatalf("%d distinct MsgIds in %d pushes", len(ids), len(ts))
	}

	peer := httptest.NewServer(peerPushHandler(a.cfg.AppID, a.cfg.Messages.Token, a.cfg.Messages.EncodingAESKey))
	defer peer.Close()
	peerTargets, err := g.make(peer.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := send(t, peerTargets[0]); code != http.StatusOK || body != "success" {
		t.Fatalf("peer answered %d %q", code, body)
	}
	forge := func(param string) vegeta.Target {
		f := peerTargets[0]
		u, _ := url.Parse(f.URL)
		q := u.Query()
		q.Set(param, strings.Repeat("0", 40))
		u.RawQuery = q.Encode()
		f.URL = u.String()
		return f
	}
	if code, _ := send(t, forge("signature")); code != http.StatusBadRequest {
		t.Fatalf("peer answered %d to a forged signature", code)
	}
	// The peer, like silenceper, does not check msg_signature; minigate
	// does (it verifies more than the peer it is compared with).
	forgedMsgSig := forge("msg_signature")
	if code, _ := send(t, forgedMsgSig); code != http.StatusOK {
		t.Fatalf("peer answered %d to a forged msg_signature; silenceper used to accept it", code)
	}
	if _, err := codec.OpenMessage(request(forgedMsgSig)); err == nil {
		t.Fatal("minigate's codec accepted a forged msg_signature")
	}
}

// TestNotifyGen checks generated notifications against minigate's WeChat
// Pay adapter: signature, decryption and the transaction inside.
func TestNotifyGen(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	pay, err := wechat.NewPay(a.cfg, adapters.Options{Endpoints: sandbox.Endpoints("http://127.0.0.1:1/sandbox")})
	if err != nil {
		t.Fatal(err)
	}
	batch := []seeded{{ID: "ord_x", OutTradeNo: "MG0123456789", OpenID: "oUserA"}, {ID: "ord_y", OutTradeNo: "MG9876543210", OpenID: "oUserB"}}
	ts, err := newNotifyGen(a).make("http://127.0.0.1:1", batch, 2)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, tgt := range ts {
		n, err := pay.ParseNotification(context.Background(), request(tgt))
		if err != nil {
			t.Fatalf("minigate's adapter refuses a generated notification: %v", err)
		}
		tx := n.Payload.Transaction
		if n.Payload.Kind != orders.NotifyPayment || tx == nil || tx.OutTradeNo != batch[i].OutTradeNo || tx.Amount != seedAmount ||
			tx.State != orders.PaymentPaid || tx.AppID != a.cfg.AppID || tx.MchID != a.cfg.Pay.MchID {
			t.Fatalf("notification %d: %+v %+v", i, n, tx)
		}
		seen[n.DedupKey] = true
	}
	if len(seen) != len(ts) {
		t.Fatalf("%d distinct notification ids in %d", len(seen), len(ts))
	}
	tampered := ts[0]
	tampered.Body = bytes.Replace(tampered.Body, []byte(`"TRANSACTION.SUCCESS"`), []byte(`"TRANSACTION.SUCCESS" `), 1)
	if _, err := pay.ParseNotification(context.Background(), request(tampered)); err == nil {
		t.Fatal("a tampered notification verified")
	}
}

// tableCounts counts what one push and one payment leave behind.
func tableCounts(t *testing.T, db *sqlx.DB) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for name, q := range map[string]string{
		"callbacks/messages":   `SELECT count(*) FROM callbacks WHERE kind = 'messages'`,
		"callbacks/payments":   `SELECT count(*) FROM callbacks WHERE kind = 'payments'`,
		"messages":             `SELECT count(*) FROM messages`,
		"conversations":        `SELECT count(*) FROM conversations`,
		"events/message":       `SELECT count(*) FROM events WHERE type = 'message.received'`,
		"events/paid":          `SELECT count(*) FROM events WHERE type = 'order.paid'`,
		"jobs":                 `SELECT count(*) FROM river_job WHERE kind = 'event_deliver' AND queue = 'events'`,
		"orders/paid":          `SELECT count(*) FROM orders WHERE status = 'paid' AND transaction_id <> '' AND paid_at IS NOT NULL`,
		"timeline/status":      `SELECT count(*) FROM order_events WHERE kind = 'status' AND source = 'notify'`,
		"timeline/implied":     `SELECT count(*) FROM order_events WHERE detail ? 'implied_by'`,
		"timeline/transaction": `SELECT count(*) FROM order_events WHERE detail ? 'transaction_id'`,
	} {
		var n int64
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = n
	}
	return out
}

// TestCeilingsWriteWhatMinigateWrites drives one push and one payment
// notification through a real minigate, runs the ceilings' operations once
// on another database, and compares what each left behind: the ceilings
// must do the same writes, or their ratios mean nothing.
func TestCeilingsWriteWhatMinigateWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer backend.Close()
	env := testenv.Start(t, testenv.Spec{
		Apps:   []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat, Pay: true}},
		Events: config.Events{URL: backend.URL, Secret: eventsSecret},
	})
	a := &benchApp{sb: env.SandboxApp("wx"), cfg: env.App("wx")}
	openIDs := []string{"oBenchUser0000000000000000001"}

	push, err := newPushGen(a, openIDs).make(env.URL, 1)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := send(t, push[0]); code != http.StatusOK || body != "success" {
		t.Fatalf("push answered %d %q", code, body)
	}
	so, err := seedOrders(ctx, env.DB, a.cfg.ID, openIDs, 1)
	if err != nil {
		t.Fatal(err)
	}
	notes, err := newNotifyGen(a).make(env.URL, so, 1)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := send(t, notes[0]); code != http.StatusNoContent {
		t.Fatalf("notification answered %d %q", code, body)
	}
	want := tableCounts(t, env.DB)

	ceil, err := openMigrated(ctx, pgtest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ceil.Close()
	rc, err := river.NewClient(riverdatabasesql.New(ceil.DB), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pc := &pushCeiling{app: a.cfg.ID, db: ceil, river: rc, openIDs: openIDs, msgBase: 1 << 40}
	if err := pc.op(ctx, 1); err != nil {
		t.Fatalf("push ceiling: %v", err)
	}
	cso, err := seedOrders(ctx, ceil, a.cfg.ID, openIDs, 1)
	if err != nil {
		t.Fatal(err)
	}
	nc := &notifyCeiling{app: a.cfg.ID, db: ceil, river: rc, orders: cso}
	if err := nc.op(ctx, 1); err != nil {
		t.Fatalf("notification ceiling: %v", err)
	}
	got := tableCounts(t, ceil)
	if !maps.Equal(got, want) {
		t.Fatalf("the ceilings wrote\n%v\nminigate wrote\n%v", got, want)
	}
	for k, v := range want {
		if v == 0 {
			t.Errorf("nothing in %s: the comparison proves little", k)
		}
	}
	if err := nc.op(ctx, 2); err == nil {
		t.Error("the notification ceiling ran past its seeded orders")
	}
}
