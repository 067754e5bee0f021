package sandbox

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func quietSandbox(schedule []time.Duration) *Sandbox {
	return New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Redeliver: schedule})
}

// receiver answers failures times with status fail (and body failBody),
// then 200 with okBody, counting every request.
func receiver(t *testing.T, failures int, fail int, failBody, okBody string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= int64(failures) {
			w.WriteHeader(fail)
			_, _ = io.WriteString(w, failBody)
			return
		}
		_, _ = io.WriteString(w, okBody)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestAcknowledged(t *testing.T) {
	t.Parallel()
	const xmlType = "text/xml; charset=utf-8"
	for _, tc := range []struct {
		name, ctype string
		d           Delivery
		want        bool
	}{
		{"wechatpay 200", "application/json", Delivery{Status: 200}, true},
		{"wechatpay 204", "application/json", Delivery{Status: 204}, true},
		{"wechatpay 200 with FAIL body counts as received", "application/json", Delivery{Status: 200, Body: `{"code":"FAIL"}`}, true},
		{"wechatpay 500", "application/json", Delivery{Status: 500}, false},
		{"no answer", "application/json", Delivery{Error: "connection refused"}, false},
		{"push success", "text/xml", Delivery{Status: 200, Body: "success"}, true},
		{"push 503", "text/xml", Delivery{Status: 503, Body: "retry"}, false},
		{"alipay success", alipayFormType, Delivery{Status: 200, Body: "success"}, true},
		{"alipay other body", alipayFormType, Delivery{Status: 200, Body: "fail"}, false},
		{"qpay SUCCESS", xmlType, Delivery{Status: 200, Body: "<xml><return_code>SUCCESS</return_code></xml>"}, true},
		{"qpay CDATA SUCCESS", xmlType, Delivery{Status: 200, Body: "<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>"}, true},
		{"qpay FAIL at 200", xmlType, Delivery{Status: 200, Body: "<xml><return_code>FAIL</return_code></xml>"}, false},
		{"qpay garbled", xmlType, Delivery{Status: 200, Body: "<xml><return_code>SUCC"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := acknowledged(tc.ctype, tc.d); got != tc.want {
				t.Fatalf("acknowledged(%q, %+v) = %v, want %v", tc.ctype, tc.d, got, tc.want)
			}
		})
	}
}

func TestRedelivery(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, tc := range []struct {
		name      string
		schedule  []time.Duration
		failures  int
		ctype     string
		failBody  string
		okBody    string
		attempts  int
		acked     bool
		firstSent int64
	}{
		{name: "retried until acknowledged", schedule: []time.Duration{ms, 2 * ms, 3 * ms, 4 * ms}, failures: 2, ctype: "application/json", okBody: "", attempts: 3, acked: true},
		{name: "first attempt acknowledged", schedule: []time.Duration{ms}, failures: 0, ctype: "application/json", attempts: 1, acked: true},
		{name: "schedule ends", schedule: []time.Duration{ms, ms}, failures: 10, ctype: "application/json", attempts: 3, acked: false},
		{name: "alipay wants success", schedule: []time.Duration{ms, ms, ms}, failures: 1, ctype: alipayFormType, failBody: "fail", okBody: "success", attempts: 2, acked: true},
		{name: "recorded without retries", schedule: []time.Duration{}, failures: 1, ctype: "application/json", attempts: 1, acked: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, n := receiver(t, tc.failures, http.StatusServiceUnavailable, tc.failBody, tc.okBody)
			if tc.ctype == alipayFormType {
				// Alipay reads the body: the failures answer 200 "fail".
				srv, n = receiver(t, tc.failures, http.StatusOK, tc.failBody, tc.okBody)
			}
			s := quietSandbox(tc.schedule)
			first := s.deliver(context.Background(), srv.URL+"/cb", tc.ctype, http.Header{"X-Sig": {"1"}}, []byte("body"))
			if first.Acked != (tc.failures == 0) {
				t.Fatalf("first delivery acked = %v with %d failures", first.Acked, tc.failures)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.WaitRedelivered(ctx, srv.URL); err != nil {
				t.Fatal(err)
			}
			cbs := s.Callbacks(srv.URL)
			if len(cbs) != 1 {
				t.Fatalf("%d callbacks recorded, want 1", len(cbs))
			}
			cb := cbs[0]
			if len(cb.Attempts) != tc.attempts || cb.Acked != tc.acked || cb.Pending {
				t.Fatalf("callback %+v: want %d attempts, acked %v, not pending", cb, tc.attempts, tc.acked)
			}
			if got := n.Load(); got != int64(tc.attempts) {
				t.Fatalf("receiver saw %d requests, want %d", got, tc.attempts)
			}
			for i := 1; i < len(cb.Attempts); i++ {
				if gap := cb.Attempts[i].At.Sub(cb.Attempts[i-1].At); gap < tc.schedule[i-1] {
					t.Fatalf("attempt %d came %v after the previous one, before the schedule's %v", i, gap, tc.schedule[i-1])
				}
			}
		})
	}
}

func TestRedeliveryAfterRefusedConnections(t *testing.T) {
	t.Parallel()
	// Reserve a port, close it (connections are refused), then listen on
	// it again while the retries run: the callback lands once it can.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := quietSandbox([]time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond, 320 * time.Millisecond})
	if d := s.deliver(context.Background(), "http://"+addr+"/cb", "text/xml", nil, []byte("<xml/>")); d.Error == "" || d.Acked {
		t.Fatalf("delivery to a closed port: %+v", d)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	var got atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		_, _ = io.WriteString(w, "success")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitRedelivered(ctx, "http://"+addr); err != nil {
		t.Fatal(err)
	}
	cb := s.Callbacks("http://" + addr)[0]
	if !cb.Acked || got.Load() != 1 || cb.Attempts[0].Error == "" {
		t.Fatalf("callback %+v, receiver saw %d", cb, got.Load())
	}
}

func TestSetRedeliveryStopsPendingRetries(t *testing.T) {
	t.Parallel()
	srv, n := receiver(t, 100, http.StatusInternalServerError, "", "")
	s := quietSandbox([]time.Duration{time.Hour})
	s.deliver(context.Background(), srv.URL, "application/json", nil, nil)
	if cbs := s.Callbacks(srv.URL); len(cbs) != 1 || !cbs[0].Pending {
		t.Fatalf("callbacks %+v, want one pending", cbs)
	}
	s.SetRedelivery(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.WaitRedelivered(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	s.deliver(context.Background(), srv.URL, "application/json", nil, nil)
	if cbs := s.Callbacks(""); len(cbs) != 0 || n.Load() != 2 {
		t.Fatalf("redelivery off: callbacks %+v, receiver saw %d", cbs, n.Load())
	}
}

func TestRedeliveryControlRoute(t *testing.T) {
	t.Parallel()
	s := quietSandbox(nil)
	app := s.Handler()
	put := func(body string) (int, map[string]any) {
		req := httptest.NewRequest(http.MethodPut, "/redelivery", strings.NewReader(body))
		resp, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	for _, tc := range []struct {
		body    string
		status  int
		enabled bool
		delays  int
	}{
		{`{"schedule":"wechatpay","scale":0.001}`, 200, true, len(WeChatPayRetries)},
		{`{"delays_ms":[10,20]}`, 200, true, 2},
		{`{}`, 200, false, 0},
		{`{"delays_ms":[0]}`, 400, false, 0},
		{`{"schedule":"alipay"}`, 400, false, 0},
		{`not json`, 400, false, 0},
	} {
		status, out := put(tc.body)
		if status != tc.status {
			t.Fatalf("PUT %s: %d, want %d", tc.body, status, tc.status)
		}
		if status == 200 && (out["enabled"] != tc.enabled || len(out["delays_ms"].([]any)) != tc.delays) {
			t.Fatalf("PUT %s: %v", tc.body, out)
		}
	}
}

func TestSlow(t *testing.T) {
	t.Parallel()
	s := quietSandbox(nil)
	app := s.Handler()
	get := func(path string) time.Duration {
		start := time.Now()
		resp, err := app.Test(httptest.NewRequest(http.MethodGet, path, nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return time.Since(start)
	}
	undo := s.Slow("/redelivery", 300*time.Millisecond)
	if d := get("/sandbox/redelivery"); d < 300*time.Millisecond {
		t.Fatalf("slowed route answered after %v", d)
	}
	if d := get("/apps/none/users/x"); d > 200*time.Millisecond {
		t.Fatalf("other route answered after %v", d)
	}
	done := make(chan time.Duration)
	go func() { done <- get("/redelivery") }()
	time.Sleep(50 * time.Millisecond)
	undo()
	if d := <-done; d > 250*time.Millisecond {
		t.Fatalf("undo did not release a waiting request (%v)", d)
	}
	if d := get("/redelivery"); d > 200*time.Millisecond {
		t.Fatalf("after undo: %v", d)
	}
}
