package orders_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

// The contract suite: the same cases, end to end through the simulator,
// for every payment platform.

const eventsSecret = "test-events-secret-0123456789"

// receiver is the business backend: it records the events minigate
// delivers, after checking their Standard Webhooks signature.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	signer *events.Signer
	mu     sync.Mutex
	got    map[string][]string // order_id → event types, in arrival order
	ids    map[string]int      // event id → deliveries
}

func newReceiver(t *testing.T) *receiver {
	signer, err := events.NewSigner(eventsSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, signer: signer, got: map[string][]string{}, ids: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, tsText := req.Header.Get(events.HeaderID), req.Header.Get(events.HeaderTimestamp)
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || req.Header.Get(events.HeaderSignature) != r.signer.Sign(id, time.Unix(ts, 0), body) {
		r.t.Errorf("event %s: bad signature", id)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev struct {
		ID   string         `json:"id"`
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != id {
		r.t.Errorf("event body %s: %v", body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	orderID, _ := ev.Data["order_id"].(string)
	r.mu.Lock()
	r.ids[ev.ID]++
	if r.ids[ev.ID] == 1 { // receivers de-duplicate on webhook-id
		r.got[orderID] = append(r.got[orderID], ev.Type)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) events(orderID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got[orderID]...)
}

// waitEvents waits until the receiver has exactly the events want for the
// order, in any order (deliveries run concurrently and retry).
func (r *receiver) waitEvents(t *testing.T, orderID string, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = slices.Sorted(slices.Values(r.events(orderID))); slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("events for %s: got %v, want %v", orderID, got, want)
}

// suite is one merchant mode's running instance with a logged-in user.
type suite struct {
	e        *testenv.Env
	rcv      *receiver
	platform string
	app      string // minigate app id
	token    string // alice's session token
	userID   string
	openID   string
}

// merchantMode is one way a merchant connects: a platform and how its
// merchant account is set up. Every mode runs the whole contract suite.
type merchantMode struct {
	name string
	spec sandbox.AppSpec // Platform and merchant settings; ID is set per app
}

var merchantModes = []merchantMode{
	{"wechat direct public key", sandbox.AppSpec{Platform: sandbox.WeChat, WeChatPayKeyMode: sandbox.KeyModePublicKey}},
	{"wechat direct certificate", sandbox.AppSpec{Platform: sandbox.WeChat, WeChatPayKeyMode: sandbox.KeyModeCertificate}},
	{"qq", sandbox.AppSpec{Platform: sandbox.QQ}},
	{"alipay public key", sandbox.AppSpec{Platform: sandbox.Alipay}},
	{"alipay certificate", sandbox.AppSpec{Platform: sandbox.Alipay, AlipayCertMode: true}},
}

// booksApp is the suite's second app, whose bill only the bill case
// touches (the other cases run in parallel on "shop").
const booksApp = "books"

func startSuite(t *testing.T, m merchantMode) *suite {
	rcv := newReceiver(t)
	shop, books := m.spec, m.spec
	shop.ID, shop.Pay, books.ID, books.Pay = "shop", true, booksApp, true
	e := testenv.Start(t, testenv.Spec{
		Apps:   []sandbox.AppSpec{shop, books},
		Events: config.Events{URL: rcv.srv.URL, Secret: eventsSecret},
	})
	s := &suite{e: e, rcv: rcv, platform: m.spec.Platform, app: e.App("shop").ID}
	alice := e.Login(t, "shop", "alice")
	s.token, s.userID, s.openID = alice.Token, alice.UserID, alice.OpenID
	return s
}

// orderView is the API's order.
type orderView struct {
	ID             string            `json:"id"`
	Status         string            `json:"status"`
	OutTradeNo     string            `json:"out_trade_no"`
	Amount         int64             `json:"amount"`
	RefundedAmount int64             `json:"refunded_amount"`
	NeedsReview    bool              `json:"needs_review"`
	UserID         *string           `json:"user_id"`
	TransactionID  string            `json:"transaction_id"`
	PayParams      map[string]string `json:"pay_params"`
	Events         []struct {
		Kind   string `json:"kind"`
		From   string `json:"from_status"`
		To     string `json:"to_status"`
		Source string `json:"source"`
	} `json:"events"`
	Refunds []refundView `json:"refunds"`
}

type refundView struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Amount      int64  `json:"amount"`
	OutRefundNo string `json:"out_refund_no"`
}

// moves lists the timeline's state moves as "from→to/source".
func (o *orderView) moves() []string {
	var out []string
	for _, ev := range o.Events {
		if ev.Kind == orders.KindStatus {
			out = append(out, ev.From+"→"+ev.To+"/"+ev.Source)
		}
	}
	return out
}

func (o *orderView) kinds(kind string) int {
	n := 0
	for _, ev := range o.Events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

var keySeq atomic.Int64

// create makes an order for alice through the API and fails the test
// unless it is created.
func (s *suite) create(t *testing.T, amount int64) *orderView {
	t.Helper()
	r := s.e.Do("POST", "/v1/apps/"+s.app+"/orders",
		map[string]any{"user_id": s.userID, "amount": amount, "description": "测试商品 " + t.Name()},
		testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, fmt.Sprintf("k-%d", keySeq.Add(1))))
	var o orderView
	r.Expect(t, http.StatusCreated, "create order", &o)
	return &o
}

// pay has the mini-program ask for pay parameters (created → paying).
func (s *suite) pay(t *testing.T, id string) *orderView {
	t.Helper()
	r := s.e.Do("POST", "/v1/orders/"+id+"/pay", nil, testenv.Bearer(s.token))
	var o orderView
	r.Expect(t, http.StatusOK, "pay", &o)
	return &o
}

func (s *suite) get(t *testing.T, id string) *orderView {
	t.Helper()
	r := s.e.Do("GET", "/v1/orders/"+id, nil, testenv.Operator())
	var o orderView
	r.Expect(t, http.StatusOK, "get order", &o)
	return &o
}

// userPays has the simulated user pay at the platform, which notifies.
func (s *suite) userPays(t *testing.T, outTradeNo string, f sandbox.Faults) *sandbox.Report {
	t.Helper()
	rep, err := s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp("shop"), outTradeNo, f)
	if err != nil {
		t.Fatalf("sandbox pay: %v", err)
	}
	return rep
}

func (s *suite) waitStatus(t *testing.T, id, status string) *orderView {
	t.Helper()
	var o *orderView
	testenv.Eventually(t, 10*time.Second, "order "+id+" "+status, func() bool {
		o = s.get(t, id)
		return o.Status == status
	})
	return o
}

func (s *suite) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.e.DB.Get(&n, query, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

// paid has the user pay and checks that the notification was acknowledged.
// A 503 means minigate could not store it in time (a loaded test machine):
// the platform retries such deliveries, and so does this helper.
func (s *suite) paid(t *testing.T, outTradeNo string, f sandbox.Faults) *sandbox.Report {
	t.Helper()
	rep := s.userPays(t, outTradeNo, f)
	s.acked(t, outTradeNo, rep, f)
	return rep
}

// acked checks that no delivery in rep was refused and retries, as the
// platform does, until one is acknowledged.
func (s *suite) acked(t *testing.T, outTradeNo string, rep *sandbox.Report, f sandbox.Faults) {
	t.Helper()
	if len(rep.Deliveries) == 0 {
		t.Fatal("no delivery")
	}
	ok, retry := 0, 0
	for _, d := range rep.Deliveries {
		switch {
		case d.Status >= 200 && d.Status <= 299:
			ok++
		case d.Status == http.StatusServiceUnavailable:
			retry++
		default:
			t.Fatalf("delivery answered %d %q (%s)", d.Status, d.Body, d.Error)
		}
	}
	if retry == 0 {
		return
	}
	t.Logf("%d of %d deliveries not stored in time (503); retrying as the platform does", retry, len(rep.Deliveries))
	f.Duplicates, f.DelayMS = 0, 0
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		again := s.userPays(t, outTradeNo, f)
		if d := again.Deliveries[0]; d.Status >= 200 && d.Status <= 299 {
			return
		} else if d.Status != http.StatusServiceUnavailable {
			t.Fatalf("retried delivery answered %d %q", d.Status, d.Body)
		}
	}
	t.Fatal("the notification was never acknowledged")
}

// refused checks that every delivery got a 4xx (the platform retries).
func refused(t *testing.T, rep *sandbox.Report) {
	t.Helper()
	if len(rep.Deliveries) == 0 {
		t.Fatal("no delivery")
	}
	for _, d := range rep.Deliveries {
		if d.Status < 400 || d.Status > 499 {
			t.Fatalf("delivery answered %d %q, want 4xx", d.Status, d.Body)
		}
	}
}

// wantPayParams are the keys each platform's client API takes.
var wantPayParams = map[string][]string{
	sandbox.WeChat: {"timeStamp", "nonceStr", "package", "signType", "paySign"},
	sandbox.QQ:     {"package", "bargainor_id"},
	sandbox.Alipay: {"tradeNO"},
}

func TestPaymentsContract(t *testing.T) {
	t.Parallel()
	for _, m := range merchantModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			s := startSuite(t, m)
			for _, c := range contractCases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, s)
				})
			}
		})
	}
}

var contractCases = []struct {
	name string
	run  func(t *testing.T, s *suite)
}{
	{"create pay notify paid event", testPaid},
	{"close", testClose},
	{"partial and full refund", testRefunds},
	{"sync after a lost notification", testSyncAfterLoss},
	{"50 concurrent copies of one notification", testDuplicates},
	{"notification racing a close", testRaceClose},
	{"forged signature", testForged},
	{"tampered amount", testTamperedAmount},
	{"foreign merchant", testForeignMerchant},
	{"unknown order", testUnknownOrder},
	{"recovery sweep", testRecoverySweep},
	{"bill", testBill},
}

func testPaid(t *testing.T, s *suite) {
	o := s.create(t, 1234)
	if o.Status != "created" || o.UserID == nil || *o.UserID != s.userID || len(o.OutTradeNo) < 6 {
		t.Fatalf("created order: %+v", o)
	}
	for _, k := range wantPayParams[s.platform] {
		if o.PayParams[k] == "" {
			t.Fatalf("pay_params %v lack %s", o.PayParams, k)
		}
	}
	p := s.pay(t, o.ID)
	if p.Status != "paying" || len(p.PayParams) == 0 {
		t.Fatalf("after /pay: %s %v", p.Status, p.PayParams)
	}
	s.paid(t, o.OutTradeNo, sandbox.Faults{})
	got := s.get(t, o.ID) // acknowledged only after commit: paid right away
	if got.Status != "paid" || got.TransactionID == "" || got.NeedsReview {
		t.Fatalf("after notification: %s %q", got.Status, got.TransactionID)
	}
	if m := strings.Join(got.moves(), " "); m != "created→paying/api paying→paid/notify" {
		t.Fatalf("timeline moves: %s", m)
	}
	s.rcv.waitEvents(t, o.ID, orders.EventOrderPaid)

	// The owner sees the order; another user does not; /pay on a paid order is a conflict.
	if r := s.e.Do("GET", "/v1/orders/"+o.ID, nil, testenv.Bearer(s.token)); r.Status != 200 || strings.Contains(string(r.Body), `"events"`) {
		t.Fatalf("owner GET: %d %s", r.Status, r.Body)
	}
	bob := s.e.Login(t, "shop", "bob-"+strings.ReplaceAll(t.Name(), "/", "-"))
	if r := s.e.Do("GET", "/v1/orders/"+o.ID, nil, testenv.Bearer(bob.Token)); r.Status != 404 {
		t.Fatalf("other user's GET: %d %s", r.Status, r.Body)
	}
	if r := s.e.Do("POST", "/v1/orders/"+o.ID+"/pay", nil, testenv.Bearer(s.token)); r.Status != 409 || r.ErrorCode() != "order_paid" {
		t.Fatalf("pay a paid order: %d %s", r.Status, r.Body)
	}
}

func testClose(t *testing.T, s *suite) {
	o := s.create(t, 500)
	s.pay(t, o.ID)
	r := s.e.Do("POST", "/v1/orders/"+o.ID+"/close", nil, testenv.Operator())
	r.Expect(t, 200, "close", nil)
	got := s.get(t, o.ID)
	if got.Status != "closed" || strings.Join(got.moves(), " ") != "created→paying/api paying→closed/api" {
		t.Fatalf("closed order: %s %v", got.Status, got.moves())
	}
	s.rcv.waitEvents(t, o.ID, orders.EventOrderClosed)
	// Paying a closed order is impossible at the platform, and /pay refuses.
	if _, err := s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp("shop"), o.OutTradeNo, sandbox.Faults{}); err == nil {
		t.Fatal("the simulator let the user pay a closed order")
	}
	if r := s.e.Do("POST", "/v1/orders/"+o.ID+"/pay", nil, testenv.Bearer(s.token)); r.Status != 409 || r.ErrorCode() != "order_closed" {
		t.Fatalf("pay a closed order: %d %s", r.Status, r.Body)
	}
	// Closing again is idempotent.
	if r := s.e.Do("POST", "/v1/orders/"+o.ID+"/close", nil, testenv.Operator()); r.Status != 200 {
		t.Fatalf("close again: %d %s", r.Status, r.Body)
	}
}

// refund requests a refund and returns it.
func (s *suite) refund(t *testing.T, id, key string, amount int64) (int, refundView, string) {
	t.Helper()
	r := s.e.Do("POST", "/v1/orders/"+id+"/refunds", map[string]any{"amount": amount, "reason": "测试退款"},
		testenv.Operator(), testenv.Header(orders.HeaderIdempotencyKey, key))
	var rf refundView
	if r.Status < 300 {
		r.Decode(t, &rf)
	}
	return r.Status, rf, r.ErrorCode()
}

// waitRefund waits until the refund succeeded. WeChat Pay says so in a
// REFUND.SUCCESS notification; QQ wallet (and Alipay without fund change)
// only when asked, so for them the wait syncs with the platform.
func (s *suite) waitRefund(t *testing.T, orderID, refundID string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "refund "+refundID+" succeeded", func() bool {
		for _, rf := range s.get(t, orderID).Refunds {
			if rf.ID == refundID && rf.Status == "succeeded" {
				return true
			}
		}
		if s.platform != sandbox.WeChat {
			s.e.Do("POST", "/v1/orders/"+orderID+"/sync", nil, testenv.Operator())
		}
		return false
	})
}

// refundStatus reads a refund's status from the database.
func (s *suite) refundStatus(t *testing.T, refundID string) string {
	t.Helper()
	var st string
	if err := s.e.DB.Get(&st, `SELECT status FROM refunds WHERE id = $1`, refundID); err != nil {
		t.Fatal(err)
	}
	return st
}

func testRefunds(t *testing.T, s *suite) {
	o := s.create(t, 100)
	s.pay(t, o.ID)
	s.paid(t, o.OutTradeNo, sandbox.Faults{})
	if st, _, code := s.refund(t, o.ID, "r-early-"+o.ID, 101); st != 409 || code != "refund_exceeds_paid" {
		t.Fatalf("refund over the amount: %d %s", st, code)
	}
	st, r1, _ := s.refund(t, o.ID, "r1-"+o.ID, 30)
	if st != 201 && st != 202 || r1.Amount != 30 || r1.OutRefundNo == "" {
		t.Fatalf("refund 30: %d %+v", st, r1)
	}
	// The same key and body is the same refund; another body is a conflict.
	if st2, again, _ := s.refund(t, o.ID, "r1-"+o.ID, 30); st2 >= 300 || again.ID != r1.ID {
		t.Fatalf("replayed refund: %d %+v, want %s", st2, again, r1.ID)
	}
	if st2, _, code := s.refund(t, o.ID, "r1-"+o.ID, 31); st2 != 409 || code != "idempotency_key_reused" {
		t.Fatalf("reused refund key: %d %s", st2, code)
	}
	s.waitRefund(t, o.ID, r1.ID)
	if got := s.get(t, o.ID); got.Status != "partially_refunded" || got.RefundedAmount != 30 {
		t.Fatalf("after partial refund: %s %d", got.Status, got.RefundedAmount)
	}
	if st, _, code := s.refund(t, o.ID, "r-over-"+o.ID, 71); st != 409 || code != "refund_exceeds_paid" {
		t.Fatalf("refund beyond the rest: %d %s", st, code)
	}
	_, r2, _ := s.refund(t, o.ID, "r2-"+o.ID, 70)
	s.waitRefund(t, o.ID, r2.ID)
	got := s.get(t, o.ID)
	if got.Status != "refunded" || got.RefundedAmount != 100 || got.kinds(orders.KindRefundSucceeded) != 2 || got.NeedsReview {
		t.Fatalf("after full refund: %s %d, %d refund rows", got.Status, got.RefundedAmount, got.kinds(orders.KindRefundSucceeded))
	}
	s.rcv.waitEvents(t, o.ID, orders.EventOrderPaid, orders.EventRefundSucceeded, orders.EventRefundSucceeded)
	if st, _, code := s.refund(t, o.ID, "r3-"+o.ID, 1); st != 409 || code != "refund_exceeds_paid" {
		t.Fatalf("refund a refunded order: %d %s", st, code)
	}
}

func testSyncAfterLoss(t *testing.T, s *suite) {
	o := s.create(t, 777)
	s.pay(t, o.ID)
	if rep := s.userPays(t, o.OutTradeNo, sandbox.Faults{Drop: true}); !rep.Dropped {
		t.Fatal("notification not dropped")
	}
	if got := s.get(t, o.ID); got.Status != "paying" {
		t.Fatalf("before sync: %s", got.Status)
	}
	r := s.e.Do("POST", "/v1/orders/"+o.ID+"/sync", nil, testenv.Operator())
	var got orderView
	r.Expect(t, 200, "sync", &got)
	if got.Status != "paid" || strings.Join(got.moves(), " ") != "created→paying/api paying→paid/query" {
		t.Fatalf("after sync: %s %v", got.Status, got.moves())
	}
	s.rcv.waitEvents(t, o.ID, orders.EventOrderPaid)
	// The notification arriving late changes nothing.
	s.paid(t, o.OutTradeNo, sandbox.Faults{})
	if n := len(s.get(t, o.ID).moves()); n != 2 {
		t.Fatalf("late notification added moves: %d", n)
	}
}

func testDuplicates(t *testing.T, s *suite) {
	o := s.create(t, 4321)
	s.pay(t, o.ID)
	rep := s.userPays(t, o.OutTradeNo, sandbox.Faults{Duplicates: 49})
	if len(rep.Deliveries) != 50 {
		t.Fatalf("%d deliveries, want 50", len(rep.Deliveries))
	}
	s.acked(t, o.OutTradeNo, rep, sandbox.Faults{})
	got := s.get(t, o.ID)
	if got.Status != "paid" {
		t.Fatalf("status %s", got.Status)
	}
	if n := s.count(t, `SELECT count(*) FROM order_events WHERE order_id = $1 AND to_status = 'paid'`, o.ID); n != 1 {
		t.Fatalf("%d paid timeline rows, want 1", n)
	}
	if n := s.count(t, `SELECT count(*) FROM events WHERE type = 'order.paid' AND data->>'order_id' = $1`, o.ID); n != 1 {
		t.Fatalf("%d order.paid events, want 1", n)
	}
	s.rcv.waitEvents(t, o.ID, orders.EventOrderPaid)
}

func testRaceClose(t *testing.T, s *suite) {
	outcomes := map[string]int{}
	for i := range 6 {
		o := s.create(t, int64(100+i))
		s.pay(t, o.ID)
		var (
			wg       sync.WaitGroup
			payErr   error
			payRep   *sandbox.Report
			closeRes *testenv.Response
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i*i) * time.Millisecond) // vary who wins
			payRep, payErr = s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp("shop"), o.OutTradeNo, sandbox.Faults{})
		}()
		go func() {
			defer wg.Done()
			closeRes = testenv.Do(t, "POST", s.e.URL+"/v1/orders/"+o.ID+"/close", nil, testenv.Operator())
		}()
		wg.Wait()
		got := s.get(t, o.ID)
		switch {
		case payErr == nil: // the user paid first: the order ends paid
			s.acked(t, o.OutTradeNo, payRep, sandbox.Faults{})
			if got.Status != "paid" || closeRes.Status != 409 || closeRes.ErrorCode() != "order_paid" {
				t.Fatalf("paid at the platform: local %s, close %d %s", got.Status, closeRes.Status, closeRes.Body)
			}
			if n := got.kinds(orders.KindStatus); n != 2 {
				t.Fatalf("%d moves, want 2: %v", n, got.moves())
			}
		default: // the close won: the platform refused the payment
			if got.Status != "closed" || closeRes.Status != 200 {
				t.Fatalf("closed at the platform (%v): local %s, close %d %s", payErr, got.Status, closeRes.Status, closeRes.Body)
			}
		}
		outcomes[got.Status]++
	}
	t.Logf("race outcomes: %v", outcomes)
}

func testForged(t *testing.T, s *suite) {
	o := s.create(t, 999)
	s.pay(t, o.ID)
	refused(t, s.userPays(t, o.OutTradeNo, sandbox.Faults{BadSignature: true}))
	if got := s.get(t, o.ID); got.Status != "paying" || got.NeedsReview {
		t.Fatalf("after a forged notification: %s review=%v", got.Status, got.NeedsReview)
	}
	if n := s.count(t, `SELECT count(*) FROM rejected_callbacks WHERE app = $1 AND kind = 'payments'`, s.app); n == 0 {
		t.Fatal("forged notification not kept in rejected_callbacks")
	}
	// The platform's retry, correctly signed, is then accepted.
	s.paid(t, o.OutTradeNo, sandbox.Faults{})
	if got := s.get(t, o.ID); got.Status != "paid" {
		t.Fatalf("after the genuine retry: %s", got.Status)
	}
}

func testTamperedAmount(t *testing.T, s *suite) {
	o := s.create(t, 1000)
	s.pay(t, o.ID)
	one := int64(1)
	s.paid(t, o.OutTradeNo, sandbox.Faults{Amount: &one}) // genuine and stored: acknowledged
	got := s.get(t, o.ID)
	if got.Status != "paying" || !got.NeedsReview || got.kinds(orders.KindFlagged) != 1 {
		t.Fatalf("after a wrong-amount notification: %s review=%v flagged=%d", got.Status, got.NeedsReview, got.kinds(orders.KindFlagged))
	}
	r := s.e.Do("GET", "/v1/orders?flag=needs_review&app="+s.app, nil, testenv.Operator())
	if r.Status != 200 || !strings.Contains(string(r.Body), o.ID) {
		t.Fatalf("needs_review list: %d %s", r.Status, r.Body)
	}
	if n := s.count(t, `SELECT count(*) FROM events WHERE data->>'order_id' = $1`, o.ID); n != 0 {
		t.Fatalf("%d events for a mismatched payment", n)
	}
}

func testForeignMerchant(t *testing.T, s *suite) {
	o := s.create(t, 1001)
	s.pay(t, o.ID)
	rep := s.userPays(t, o.OutTradeNo, sandbox.Faults{ForeignMerchant: true})
	got := s.get(t, o.ID)
	if got.Status != "paying" {
		t.Fatalf("foreign merchant moved the order to %s", got.Status)
	}
	// Either the adapter refuses it (4xx) or orders flags it.
	if d := rep.Deliveries[0]; d.Status < 400 && !got.NeedsReview {
		t.Fatalf("foreign merchant neither refused (%d) nor flagged", d.Status)
	}
}

func testUnknownOrder(t *testing.T, s *suite) {
	o := s.create(t, 1002)
	s.pay(t, o.ID)
	if _, err := s.e.DB.Exec(`DELETE FROM orders WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	refused(t, s.userPays(t, o.OutTradeNo, sandbox.Faults{}))
	if n := s.count(t, `SELECT count(*) FROM rejected_callbacks WHERE app = $1 AND reason = $2`, s.app, string(orders.RejectUnknownOrder)); n == 0 {
		t.Fatal("unknown-order notification not kept as rejected")
	}
	if n := s.count(t, `SELECT count(*) FROM orders WHERE out_trade_no = $1`, o.OutTradeNo); n != 0 {
		t.Fatal("an order appeared")
	}
}

// sweepNow runs the recovery sweep job on the instance.
func (s *suite) sweepNow(t *testing.T) {
	t.Helper()
	if _, err := s.e.Minigate.River.Insert(context.Background(), orders.SweepArgs{}, nil); err != nil {
		t.Fatal(err)
	}
}

func testRecoverySweep(t *testing.T, s *suite) {
	lost := s.create(t, 2000)
	s.pay(t, lost.ID)
	s.userPays(t, lost.OutTradeNo, sandbox.Faults{Drop: true})
	expired := s.create(t, 2001)
	if _, err := s.e.DB.Exec(`UPDATE orders SET next_check_at = now() - interval '1 second' WHERE id = $1`, lost.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.e.DB.Exec(`UPDATE orders SET next_check_at = now() - interval '1 second', expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID); err != nil {
		t.Fatal(err)
	}
	s.sweepNow(t)
	got := s.waitStatus(t, lost.ID, "paid")
	if m := strings.Join(got.moves(), " "); m != "created→paying/api paying→paid/query" {
		t.Fatalf("recovered moves: %s", m)
	}
	got = s.waitStatus(t, expired.ID, "closed")
	if m := strings.Join(got.moves(), " "); m != "created→closed/query" {
		t.Fatalf("expired moves: %s", m)
	}
	s.rcv.waitEvents(t, lost.ID, orders.EventOrderPaid)
	s.rcv.waitEvents(t, expired.ID, orders.EventOrderClosed)
	if _, err := s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp("shop"), expired.OutTradeNo, sandbox.Faults{}); err == nil {
		t.Fatal("the simulator let the user pay an expired, closed order")
	}

	// A pending refund is finished by the sweep, without a sync.
	// Each pass is a due check, as the back-off schedule makes them.
	_, rf, _ := s.refund(t, lost.ID, "sweep-"+lost.ID, 500)
	testenv.Eventually(t, 10*time.Second, "refund finished by the sweep", func() bool {
		if s.refundStatus(t, rf.ID) == "succeeded" {
			return true
		}
		if _, err := s.e.DB.Exec(`UPDATE refunds SET next_check_at = now() - interval '1 second' WHERE id = $1`, rf.ID); err != nil {
			t.Fatal(err)
		}
		s.sweepNow(t)
		time.Sleep(50 * time.Millisecond)
		return false
	})
	if got := s.get(t, lost.ID); got.Status != "partially_refunded" || got.RefundedAmount != 500 {
		t.Fatalf("after the swept refund: %s %d", got.Status, got.RefundedAmount)
	}
}

// testBill reconciles a day of the books app: two payments (one whose
// notification was lost) and a partial refund. The first run finds the
// lost payment in the bill and recovers it; the second matches.
func testBill(t *testing.T, s *suite) {
	app := s.e.App(booksApp).ID
	bob := s.e.Login(t, booksApp, "bob")
	books := &suite{e: s.e, rcv: s.rcv, platform: s.platform, app: app, token: bob.Token, userID: bob.UserID, openID: bob.OpenID}
	a, lost := books.create(t, 300), books.create(t, 450)
	books.pay(t, a.ID)
	books.pay(t, lost.ID)
	rep, err := s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp(booksApp), a.OutTradeNo, sandbox.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	books.acked(t, a.OutTradeNo, rep, sandbox.Faults{})
	if rep, err := s.e.Sandbox.Pay(context.Background(), s.e.SandboxApp(booksApp), lost.OutTradeNo, sandbox.Faults{Drop: true}); err != nil || !rep.Dropped {
		t.Fatalf("dropped payment: %v", err)
	}
	books.waitStatus(t, a.ID, "paid")
	_, rf, _ := books.refund(t, a.ID, "bill-"+a.ID, 100)
	books.waitRefund(t, a.ID, rf.ID)

	today := reconcile.DateOf(time.Now())
	if err := s.e.Sandbox.MarkBillReady(app, today.String()); err != nil {
		t.Fatal(err)
	}
	run := func() reconcile.Report {
		r := s.e.Do("POST", "/v1/reconciliations", map[string]any{"app": app, "date": today.String()}, testenv.Operator())
		var rep reconcile.Report
		r.Expect(t, http.StatusCreated, "reconcile", &rep)
		return rep
	}
	first := run()
	if len(first.Discrepancies) != 1 || first.Discrepancies[0].Kind != reconcile.MissingLocal ||
		first.Discrepancies[0].OutTradeNo != lost.OutTradeNo || first.Discrepancies[0].Action != reconcile.ActionRecovered {
		t.Fatalf("first run: %s %+v", first.Status, first.Discrepancies)
	}
	if b := first.Totals.Bill; b.Payments != 2 || b.PaymentAmount != 750 || b.Refunds != 1 || b.RefundAmount != 100 {
		t.Fatalf("bill totals %+v", b)
	}
	if got := books.get(t, lost.ID); got.Status != "paid" {
		t.Fatalf("the lost payment after reconciliation: %s", got.Status)
	}
	if second := run(); second.Status != reconcile.StatusMatched || second.Totals.Matched != 3 {
		t.Fatalf("second run: %s %+v", second.Status, second.Discrepancies)
	}
}
