package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// eventsSecret signs the events minigate sends to the test receivers.
const eventsSecret = "e2e-events-secret-0123456789abcdef"

// testSchedule is the platforms' retry schedule scaled down a thousandfold:
// 15 ms, 15 ms, 30 ms, 180 ms, 600 ms, 1.2 s, 1.8 s … (87 s in all).
var testSchedule = sandbox.Scaled(sandbox.WeChatPayRetries, 0.001)

// receivedEvent is one event as the business backend saw it.
type receivedEvent struct {
	ID   string         `json:"id"`
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

// eventReceiver is the business backend: it checks each delivery's
// Standard Webhooks signature (with its own HMAC, not minigate's signer),
// de-duplicates on webhook-id as the contract asks receivers to, and keeps
// each event once.
type eventReceiver struct {
	srv *httptest.Server
	// status, when set, is answered instead of 204 (a failing backend).
	status atomic.Int32
	// delay, when set, is how long the backend takes to answer.
	delay atomic.Int64

	mu         sync.Mutex
	deliveries map[string]int // webhook-id → deliveries
	events     []receivedEvent
	forged     int
}

func newEventReceiver(t testing.TB) *eventReceiver {
	t.Helper()
	r := &eventReceiver{deliveries: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// config is the events section pointing minigate at the receiver.
func (r *eventReceiver) config() config.Events {
	return config.Events{URL: r.srv.URL, Secret: eventsSecret}
}

func (r *eventReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, []byte(eventsSecret))
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	var ev receivedEvent
	if !hmac.Equal([]byte(req.Header.Get("webhook-signature")), []byte(want)) || json.Unmarshal(body, &ev) != nil || ev.ID != id {
		r.mu.Lock()
		r.forged++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if s := r.status.Load(); s != 0 {
		w.WriteHeader(int(s))
		return
	}
	time.Sleep(time.Duration(r.delay.Load()))
	r.mu.Lock()
	r.deliveries[id]++
	if r.deliveries[id] == 1 {
		r.events = append(r.events, ev)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// received returns the distinct events of type typ (all types for "").
func (r *eventReceiver) received(typ string) []receivedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedEvent
	for _, ev := range r.events {
		if typ == "" || ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// stats returns how many distinct events arrived, how many of them more
// than once (at-least-once redeliveries the receiver de-duplicated), and
// how many deliveries failed the signature check.
func (r *eventReceiver) stats() (distinct, repeated, forged int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.deliveries {
		if n > 1 {
			repeated++
		}
	}
	return len(r.events), repeated, r.forged
}

// waitFor waits until at least n distinct events of type typ arrived.
func (r *eventReceiver) waitFor(t testing.TB, typ string, n int, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, fmt.Sprintf("%d %s events", n, typ), func() bool {
		return len(r.received(typ)) >= n
	})
}

// dataString reads a string at a path of nested objects in ev.Data.
func (ev receivedEvent) dataString(path ...string) string {
	var v any = ev.Data
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// order is an order as the API shows it.
type order struct {
	ID         string `json:"id"`
	App        string `json:"app"`
	OutTradeNo string `json:"out_trade_no"`
	Status     string `json:"status"`
	Amount     int64  `json:"amount"`
}

// payerOf is the payer field minigate takes for simulated user name of app:
// the openid, or the Alipay user id for Alipay apps.
func payerOf(sb *sandbox.Sandbox, a *sandbox.App, name string) string {
	u := sb.User(a, name)
	if a.Platform == sandbox.Alipay {
		return u.AlipayUserID
	}
	return u.OpenID
}

// createOrder creates an order of amount fen for payer through minigate at
// base and returns it; it fails the test unless the answer is 201.
func createOrder(t testing.TB, base, apiKey, app, payer string, amount int64, key string) order {
	t.Helper()
	r := testenv.Do(t, http.MethodPost, base+"/v1/apps/"+app+"/orders",
		map[string]any{"openid": payer, "amount": amount, "description": "e2e order"},
		testenv.Bearer(apiKey), testenv.Header("Idempotency-Key", key))
	if r.Status != http.StatusCreated {
		t.Fatalf("create order in %s: %d %s", app, r.Status, r.Body)
	}
	var o order
	r.Decode(t, &o)
	return o
}

// count runs a count(*) query.
func count(t testing.TB, pool *sqlx.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.Get(&n, query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// paidMoves counts the order's timeline rows that moved it to paid.
func paidMoves(t testing.TB, pool *sqlx.DB, orderID string) int {
	return count(t, pool, `SELECT count(*) FROM order_events WHERE order_id = $1 AND kind = 'status' AND to_status = 'paid'`, orderID)
}

// openDB opens a pool on url for the test's own checks.
func openDB(t testing.TB, url string) *sqlx.DB {
	t.Helper()
	pool, err := db.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return pool
}

// withHost returns database URL u with its host:port replaced.
func withHost(t testing.TB, u, hostport string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p.Host = hostport
	return p.String()
}

// hostOf returns the host:port of database URL u.
func hostOf(t testing.TB, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Host
}

// freePort returns a loopback address nothing listens on (yet).
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// get is a GET with a short timeout that reports the status (0 when there
// was no answer) and how long it took.
func get(url string, timeout time.Duration) (int, time.Duration) {
	start := time.Now()
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return 0, time.Since(start)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// pgProxy sits between minigate and Postgres and fails the way servers and
// networks do, without touching the shared Postgres server:
//
//   - Stop: the server is down. New connections are refused and open ones
//     are reset.
//   - Blackhole: the network drops everything. New connections are accepted
//     (the proxy's kernel completes the handshake) and never answered; open
//     connections stop passing bytes in both directions. Reads block —
//     contexts do not end them (lib/pq does not interrupt a read).
//   - Restore: the server is back. Connections that lost bytes in the
//     blackhole are closed (their TCP would have timed out); new ones are
//     forwarded.
type pgProxy struct {
	target string
	addr   string

	mu        sync.Mutex
	ln        net.Listener
	blackhole bool
	conns     map[*proxyConn]struct{}
	wg        sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn
	stalled        atomic.Bool
}

func (c *proxyConn) close() {
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

func newPGProxy(t testing.TB, target string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{target: target, addr: ln.Addr().String(), ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept(ln)
	t.Cleanup(p.close)
	return p
}

func (p *pgProxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		pc := &proxyConn{client: c}
		p.mu.Lock()
		black := p.blackhole
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		if black {
			pc.stalled.Store(true) // held open, never answered
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.drop(pc)
			continue
		}
		pc.server = s
		p.wg.Add(2)
		go p.pipe(pc, c, s)
		go p.pipe(pc, s, c)
	}
}

// pipe copies src to dst, dropping what it reads while blackholed.
func (p *pgProxy) pipe(pc *proxyConn, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			black := p.blackhole
			p.mu.Unlock()
			if black || pc.stalled.Load() {
				pc.stalled.Store(true)
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			p.drop(pc)
			return
		}
	}
}

func (p *pgProxy) drop(pc *proxyConn) {
	pc.close()
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// Stop refuses new connections and resets open ones.
func (p *pgProxy) Stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	conns := p.conns
	p.conns = map[*proxyConn]struct{}{}
	p.mu.Unlock()
	for pc := range conns {
		pc.close()
	}
}

// Blackhole stops passing bytes; see pgProxy.
func (p *pgProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = true
}

// Restore forwards again; see pgProxy.
func (p *pgProxy) Restore(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	p.blackhole = false
	var stalled []*proxyConn
	for pc := range p.conns {
		if pc.stalled.Load() {
			stalled = append(stalled, pc)
			delete(p.conns, pc)
		}
	}
	if p.ln == nil {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			p.mu.Unlock()
			t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
		}
		p.ln = ln
		p.wg.Add(1)
		go p.accept(ln)
	}
	p.mu.Unlock()
	for _, pc := range stalled {
		pc.close()
	}
}

func (p *pgProxy) close() {
	p.Stop()
	p.wg.Wait()
}

// databaseURL returns u (a database on the real server) reached through
// the proxy.
func (p *pgProxy) databaseURL(t testing.TB, u string) string {
	return withHost(t, u, p.addr)
}

// counterValue reads a Prometheus counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// goroutineSnapshot is the set of goroutines running at one moment, by id.
type goroutineSnapshot map[string]bool

// watchedFrames are the code a platform call or an API request runs
// through: a goroutine created after a snapshot that is still in one of
// them once the calls are over is a leak. River's own goroutines (a leader
// starting its maintenance services) are not: they are not watched.
var watchedFrames = []string{
	"github.com/minigate/minigate/adapters", "github.com/minigate/minigate/orders",
	"github.com/minigate/minigate/sessions", "github.com/minigate/minigate/webhooks",
	"github.com/minigate/minigate/internal/httpx", "github.com/minigate/minigate/internal/accesstoken",
	"github.com/minigate/minigate/sandbox", "net/http.", "github.com/silenceper/",
	"github.com/wechatpay-apiv3/", "github.com/smartwalle/",
}

// goroutineStacks returns every goroutine's stack by id.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out[id] = g
	}
	return out
}

func snapshotGoroutines() goroutineSnapshot {
	s := goroutineSnapshot{}
	for id := range goroutineStacks() {
		s[id] = true
	}
	return s
}

// leaked waits up to wait for the goroutines created since the snapshot
// that run watched code to end, and returns the stacks of those left.
func (s goroutineSnapshot) leaked(wait time.Duration) []string {
	deadline := time.Now().Add(wait)
	for {
		var left []string
		for id, stack := range goroutineStacks() {
			if s[id] {
				continue
			}
			for _, f := range watchedFrames {
				if strings.Contains(stack, f) {
					left = append(left, stack)
					break
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}
