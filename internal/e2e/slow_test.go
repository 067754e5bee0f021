package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// upstreamTimeout is limits.upstream_timeout in the slow-platform test.
const upstreamTimeout = 500 * time.Millisecond

// TestSlowPlatform: a platform that answers after more than
// limits.upstream_timeout makes API calls fail with 504 inside the
// timeout (plus a little), leaves no goroutine behind, and an order whose
// prepay timed out is prepaid by the retry with the same Idempotency-Key —
// the platform, which did create the order meanwhile, hands back the same
// prepay — and can then be paid.
//
// Not parallel: Slow acts on the simulator every test of the package shares.
func TestSlowPlatform(t *testing.T) {
	rcv := newEventReceiver(t)
	e := testenv.Start(t, testenv.Spec{
		Apps: shops, Events: rcv.config(),
		Configure: func(c *config.Config) { c.Limits.UpstreamTimeout = upstreamTimeout },
	})
	sb := e.Sandbox
	// The platform endpoints each app's prepay goes to.
	slowPaths := map[string]string{
		"wx":  "/wechatpay/v3/pay/transactions/jsapi",
		"qq":  "/qpay/cgi-bin/pay/qpay_unified_order.cgi",
		"ali": "/alipay/gateway.do",
	}
	// Warm up: a login and an order per app open the HTTP connections and
	// start the goroutines a running instance keeps.
	login := func() *testenv.Response {
		return e.Do(http.MethodPost, "/v1/apps/"+e.App("wx").ID+"/sessions", map[string]any{"code": e.MintCode("wx", "alice")})
	}
	if r := login(); r.Status != http.StatusCreated {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	for short := range slowPaths {
		a := e.SandboxApp(short)
		createOrder(t, e.URL, testenv.APIKey, a.ID, payerOf(sb, a, "warm"), 1, "warm-"+short)
	}
	baseline := snapshotGoroutines()

	bodies := map[string]map[string]any{}
	for short, path := range slowPaths {
		undo := sb.Slow(path, 3*upstreamTimeout)
		a := e.SandboxApp(short)
		body := map[string]any{"openid": payerOf(sb, a, "bob"), "amount": 4200, "description": "slow platform"}
		bodies[short] = body
		start := time.Now()
		r := e.Do(http.MethodPost, "/v1/apps/"+a.ID+"/orders", body, testenv.Operator(), testenv.Header("Idempotency-Key", "slow-"+short))
		elapsed := time.Since(start)
		undo()
		if r.Status != http.StatusGatewayTimeout || r.ErrorCode() != "platform_timeout" {
			t.Errorf("%s: prepay against a slow platform: %d %s, want 504 platform_timeout", short, r.Status, r.Body)
		}
		if elapsed > upstreamTimeout+500*time.Millisecond {
			t.Errorf("%s: answered after %v, want within the upstream timeout (%v) and a little", short, elapsed, upstreamTimeout)
		}
	}
	undo := sb.Slow("/wechat/sns/jscode2session", 3*upstreamTimeout)
	start := time.Now()
	r := login()
	elapsed := time.Since(start)
	undo()
	if r.Status != http.StatusGatewayTimeout || elapsed > upstreamTimeout+500*time.Millisecond {
		t.Errorf("login against a slow platform: %d %s after %v, want 504 within %v", r.Status, r.Body, elapsed, upstreamTimeout)
	}

	// Nothing waits any more: no goroutine started since the warm-up is
	// still in the code the calls went through.
	for _, stack := range baseline.leaked(5 * time.Second) {
		t.Errorf("goroutine left behind by timed-out platform calls:\n%s", stack)
	}

	// The same key again: the same order, prepaid now, and payable.
	for short := range slowPaths {
		a := e.SandboxApp(short)
		r := e.Do(http.MethodPost, "/v1/apps/"+a.ID+"/orders", bodies[short], testenv.Operator(), testenv.Header("Idempotency-Key", "slow-"+short))
		if r.Status != http.StatusCreated {
			t.Fatalf("%s: the same key again: %d %s", short, r.Status, r.Body)
		}
		var o order
		r.Decode(t, &o)
		var list struct {
			Data []order `json:"data"`
		}
		e.Do(http.MethodGet, "/v1/orders?app="+a.ID, nil, testenv.Operator()).Decode(t, &list)
		if len(list.Data) != 2 { // the warm-up order and this one
			t.Errorf("%s: %d orders after the retry, want 2 (the retry reuses the order)", short, len(list.Data))
		}
		rep, err := sb.Pay(context.Background(), a, o.OutTradeNo, sandbox.Faults{})
		if err != nil {
			t.Fatalf("%s: pay the retried order: %v", short, err)
		}
		if d := rep.Deliveries[0]; !d.Acked {
			t.Errorf("%s: payment notification answered %d %q", short, d.Status, d.Body)
		}
		got := e.Do(http.MethodGet, "/v1/orders/"+o.ID, nil, testenv.Operator())
		var paid order
		got.Decode(t, &paid)
		if paid.Status != "paid" {
			t.Errorf("%s: order %s is %s after payment, want paid", short, o.ID, paid.Status)
		}
	}
}
