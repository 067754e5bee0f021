package events_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	dto "github.com/prometheus/client_model/go"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"

	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/metrics"
	"github.com/minigate/minigate/internal/pgtest"
)

// The Standard Webhooks specification's published test vector.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// verifyStandardWebhook is an independent Standard Webhooks verifier, as a
// receiver would write it: decode the whsec_ secret, recompute the HMAC over
// "id.timestamp.body", compare with every v1 signature in the header in
// constant time, and refuse timestamps more than 5 minutes off.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(rest); err != nil {
			return err
		}
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

func TestSignerMatchesStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	s, err := events.NewSigner(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody)); got != vectorSignature {
		t.Fatalf("signature = %s, want %s", got, vectorSignature)
	}
	h := http.Header{}
	s.SetHeaders(h, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody))
	if err := verifyStandardWebhook(vectorSecret, h, []byte(vectorBody), time.Unix(vectorTimestamp+10, 0)); err != nil {
		t.Fatalf("independent verifier refused the vector: %v", err)
	}
	if err := verifyStandardWebhook(vectorSecret, h, []byte(`{"test": 2432232315}`), time.Unix(vectorTimestamp, 0)); err == nil {
		t.Fatal("independent verifier accepted an altered body")
	}
}

func TestNewSigner(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, secret string
		wantErr      bool
		key          []byte // the HMAC key the signer must use
	}{
		{name: "whsec secret is base64-decoded", secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789")), key: []byte("0123456789abcdef0123456789")},
		{name: "other secrets are raw bytes", secret: "plain-secret-value", key: []byte("plain-secret-value")},
		{name: "empty", secret: "", wantErr: true},
		{name: "whsec with bad base64", secret: "whsec_not base64!", wantErr: true},
		{name: "whsec with nothing after it", secret: "whsec_", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := events.NewSigner(tc.secret)
			if tc.wantErr {
				if err == nil {
					t.Fatal("NewSigner accepted an invalid secret")
				}
				if len(tc.secret) > len("whsec_") && strings.Contains(err.Error(), tc.secret) {
					t.Fatalf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mac := hmac.New(sha256.New, tc.key)
			mac.Write([]byte("evt_1.1700000000.{}"))
			want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
			if got := s.Sign("evt_1", time.Unix(1700000000, 0), []byte("{}")); got != want {
				t.Fatalf("Sign = %s, want %s", got, want)
			}
			if strings.Contains(fmt.Sprint(s), string(tc.key)) {
				t.Fatal("printing the signer shows the key")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := events.DefaultBackoff
	if span := b.Span(); span < 24*time.Hour {
		t.Fatalf("default schedule retries for %v, want at least 24h", span)
	}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 15 * time.Second}, {2, 30 * time.Second}, {3, time.Minute}, {10, 7680 * time.Second},
		{11, 4 * time.Hour}, {15, 4 * time.Hour}, {1000, 4 * time.Hour},
	} {
		if got := b.Delay(tc.n); got != tc.want {
			t.Errorf("Delay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	prev := time.Duration(0)
	for n := 1; n < 64; n++ {
		d := b.Delay(n)
		if d < prev || d > b.Max {
			t.Fatalf("Delay(%d) = %v after %v: not monotone within [Base, Max]", n, d, prev)
		}
		prev = d
	}
	short := events.Backoff{Base: 10 * time.Millisecond, Max: 40 * time.Millisecond, MaxAttempts: 5}
	if got, want := short.Span(), (10+20+40+40)*time.Millisecond; got != want {
		t.Fatalf("short Span = %v, want %v", got, want)
	}
}

// receiver is a test backend that records deliveries and fails the first
// failFirst of them with 500.
type receiver struct {
	srv       *httptest.Server
	mu        sync.Mutex
	got       []delivery
	failFirst int
	arrived   chan delivery
}

type delivery struct {
	header http.Header
	body   []byte
	status int
	at     time.Time
}

func newReceiver(t *testing.T, failFirst int) *receiver {
	r := &receiver{failFirst: failFirst, arrived: make(chan delivery, 64)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := http.StatusNoContent
		if len(r.got) < r.failFirst {
			status = http.StatusInternalServerError
		}
		d := delivery{header: req.Header.Clone(), body: body, status: status, at: time.Now()}
		r.got = append(r.got, d)
		r.mu.Unlock()
		w.WriteHeader(status)
		r.arrived <- d
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *receiver) next(t *testing.T, timeout time.Duration) delivery {
	t.Helper()
	select {
	case d := <-r.arrived:
		return d
	case <-time.After(timeout):
		t.Fatalf("no delivery within %v", timeout)
		return delivery{}
	}
}

type env struct {
	db    *sqlx.DB
	svc   *events.Service
	river *river.Client[*sql.Tx]
}

const testSecret = "whsec_dGVzdC1zZWNyZXQtZm9yLWV2ZW50cy0wMTIzNDU2Nzg5"

// setup starts an events Service with its own River client on a fresh
// database, with a short retry schedule.
func setup(t *testing.T, url string, backoff events.Backoff) *env {
	t.Helper()
	db := pgtest.New(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := events.New(db, events.Options{URL: url, Secret: testSecret, Backoff: backoff, Timeout: 2 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	svc.AddWorkers(workers)
	rc, err := river.NewClient(riverdatabasesql.New(db.DB), &river.Config{
		Logger: log, Workers: workers, TestOnly: true,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}, events.Queue: {MaxWorkers: 4}},
		FetchPollInterval: 20 * time.Millisecond, FetchCooldown: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rc.Stop(ctx)
	})
	return &env{db: db, svc: svc, river: rc}
}

func (e *env) publish(t *testing.T, typ string, data any) events.Event {
	t.Helper()
	tx, err := e.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	ev, err := e.svc.Publish(context.Background(), tx, typ, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *env) waitState(t *testing.T, id string, want events.State) (events.Event, []events.Delivery) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, ds, err := e.svc.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ev.State == want {
			return ev, ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s state %s (attempts %d, last error %q), want %s", id, ev.State, ev.Attempts, ev.LastError, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var fastBackoff = events.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond, MaxAttempts: 6}

func TestDeliverySignedAndVerifiable(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, 0)
	e := setup(t, rcv.srv.URL, fastBackoff)
	ev := e.publish(t, events.TypeOrderPaid, map[string]any{"order_id": "ord_1", "amount": 100, "note": "a\x00b ✓"})

	d := rcv.next(t, 10*time.Second)
	if err := verifyStandardWebhook(testSecret, d.header, d.body, time.Now()); err != nil {
		t.Fatalf("delivery fails Standard Webhooks verification: %v", err)
	}
	if got := d.header.Get("webhook-id"); got != ev.ID {
		t.Fatalf("webhook-id = %s, want the event id %s", got, ev.ID)
	}
	var body struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		CreatedAt time.Time       `json:"created_at"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(d.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.ID != ev.ID || body.Type != events.TypeOrderPaid || !body.CreatedAt.Equal(ev.CreatedAt) {
		t.Fatalf("body = %s, want id %s type order.paid created_at %v", d.body, ev.ID, ev.CreatedAt)
	}
	var data map[string]any
	if err := json.Unmarshal(body.Data, &data); err != nil || data["order_id"] != "ord_1" || data["note"] != "a\x00b ✓" {
		t.Fatalf("data = %s (%v)", body.Data, err)
	}
	got, ds := e.waitState(t, ev.ID, events.StateDelivered)
	if got.Attempts != 1 || got.DeliveredAt == nil || len(ds) != 1 || ds[0].Status != http.StatusNoContent || ds[0].Error != "" {
		t.Fatalf("after one good delivery: event %+v deliveries %+v", got, ds)
	}
}

// Deliveries run in their own queue (a slow backend cannot starve other
// jobs) and are counted by type and outcome.
func TestDeliveriesQueueAndMetrics(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, 1)
	e := setup(t, rcv.srv.URL, fastBackoff)
	const typ = "test.queue_and_metrics" // a type of its own: the counters are process-wide
	ev := e.publish(t, typ, map[string]any{"n": 1})
	var queue string
	if err := e.db.Get(&queue, `SELECT queue FROM river_job WHERE kind = $1`, events.DeliverArgs{}.Kind()); err != nil {
		t.Fatal(err)
	}
	if queue != events.Queue {
		t.Fatalf("delivery job in queue %q, want %q", queue, events.Queue)
	}
	e.waitState(t, ev.ID, events.StateDelivered)
	for outcome, want := range map[string]float64{"failed": 1, "delivered": 1, "given_up": 0} {
		var m dto.Metric
		if err := metrics.EventDeliveries.WithLabelValues(typ, outcome).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetCounter().GetValue(); got != want {
			t.Errorf("minigate_event_deliveries_total{type=%q,outcome=%q} = %v, want %v", typ, outcome, got, want)
		}
	}
}

func TestDeliveryRetriesUntilReceiverRecovers(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, 3)
	e := setup(t, rcv.srv.URL, fastBackoff)
	ev := e.publish(t, events.TypeMessageReceived, map[string]any{"n": 1})

	for i := range 4 {
		d := rcv.next(t, 10*time.Second)
		if err := verifyStandardWebhook(testSecret, d.header, d.body, time.Now()); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		if d.header.Get("webhook-id") != ev.ID {
			t.Fatalf("attempt %d has webhook-id %s, want %s on every retry", i+1, d.header.Get("webhook-id"), ev.ID)
		}
	}
	got, ds := e.waitState(t, ev.ID, events.StateDelivered)
	// Exactly once more after recovery: nothing arrives after the success
	// for longer than the whole retry schedule.
	time.Sleep(2 * fastBackoff.Span())
	if n := rcv.count(); n != 4 {
		t.Fatalf("receiver got %d deliveries, want 3 failures and exactly 1 success", n)
	}
	if got.Attempts != 4 || len(ds) != 4 {
		t.Fatalf("event %+v with %d deliveries, want 4 attempts recorded", got, len(ds))
	}
	for i, d := range ds {
		wantStatus := http.StatusInternalServerError
		if i == 3 {
			wantStatus = http.StatusNoContent
		}
		if d.Attempt != i+1 || d.Status != wantStatus || (d.Error == "") != (i == 3) {
			t.Fatalf("delivery %d = %+v, want attempt %d status %d", i, d, i+1, wantStatus)
		}
	}
}

func TestDeliveryGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, 1000)
	b := events.Backoff{Base: 20 * time.Millisecond, Max: 40 * time.Millisecond, MaxAttempts: 3}
	e := setup(t, rcv.srv.URL, b)
	ev := e.publish(t, events.TypeOrderClosed, map[string]any{})
	got, ds := e.waitState(t, ev.ID, events.StateFailed)
	if got.Attempts != 3 || len(ds) != 3 || !strings.Contains(got.LastError, "HTTP 500") {
		t.Fatalf("failed event %+v with %d deliveries", got, len(ds))
	}
	if rcv.count() != 3 {
		t.Fatalf("receiver got %d deliveries, want 3", rcv.count())
	}

	// Redeliver sends it once more, now, as a new job.
	rcv.mu.Lock()
	rcv.failFirst = 0
	rcv.mu.Unlock()
	red, err := e.svc.Redeliver(context.Background(), ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if red.State != events.StatePending {
		t.Fatalf("after redeliver state = %s, want pending", red.State)
	}
	got, ds = e.waitState(t, ev.ID, events.StateDelivered)
	if rcv.count() != 4 || got.Attempts != 4 || ds[3].JobID == ds[2].JobID {
		t.Fatalf("after redeliver: %d deliveries, event %+v, jobs %d/%d (want a new job)", rcv.count(), got, ds[2].JobID, ds[3].JobID)
	}
}

func TestPublishIsTransactional(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, 0)
	e := setup(t, rcv.srv.URL, fastBackoff)
	tx, err := e.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.svc.Publish(context.Background(), tx, events.TypeOrderFailed, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// A committed event after the rolled-back one is delivered; the
	// rolled-back one never is.
	other := e.publish(t, events.TypeOrderFailed, map[string]any{})
	d := rcv.next(t, 10*time.Second)
	if d.header.Get("webhook-id") != other.ID {
		t.Fatalf("delivered %s, want %s", d.header.Get("webhook-id"), other.ID)
	}
	if _, _, err := e.svc.Get(context.Background(), ev.ID); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("rolled-back event: err = %v, want ErrNotFound", err)
	}
	time.Sleep(200 * time.Millisecond)
	if rcv.count() != 1 {
		t.Fatalf("receiver got %d deliveries, want 1", rcv.count())
	}
}

func TestNoURLRecordsWithoutSending(t *testing.T) {
	t.Parallel()
	e := setup(t, "", fastBackoff)
	ev := e.publish(t, events.TypeMessageReceived, map[string]any{"x": 1})
	if ev.State != events.StateNotConfigured {
		t.Fatalf("state = %s, want not_configured", ev.State)
	}
	var jobs int
	if err := e.db.Get(&jobs, `SELECT count(*) FROM river_job`); err != nil {
		t.Fatal(err)
	}
	if jobs != 0 {
		t.Fatalf("%d jobs queued without an events URL", jobs)
	}
	_, err := e.svc.Redeliver(context.Background(), ev.ID)
	if ae, ok := apperr.As(err); !ok || ae.Code != "events_not_configured" {
		t.Fatalf("redeliver without URL: %v", err)
	}
	list, err := e.svc.List(context.Background(), events.ListParams{State: events.StateNotConfigured, Limit: 10})
	if err != nil || len(list) != 1 || list[0].ID != ev.ID || string(list[0].Data) != `{"x":1}` {
		t.Fatalf("list = %+v, %v", list, err)
	}
}

func TestListFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := setup(t, "", fastBackoff)
	var paid []string
	for i := range 5 {
		ev := e.publish(t, events.TypeOrderPaid, map[string]any{"i": i})
		paid = append(paid, ev.ID)
		e.publish(t, events.TypeRefundSucceeded, map[string]any{"i": i})
	}
	var seen []string
	cursor := ""
	for page := 0; page < 10; page++ {
		list, err := e.svc.List(context.Background(), events.ListParams{Type: events.TypeOrderPaid, Before: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range list {
			if ev.Type != events.TypeOrderPaid {
				t.Fatalf("type filter let %s through", ev.Type)
			}
			seen = append(seen, ev.ID)
		}
		if len(list) < 2 {
			break
		}
		cursor = list[len(list)-1].ID
	}
	if len(seen) != 5 {
		t.Fatalf("paged through %d order.paid events, want 5: %v", len(seen), seen)
	}
	for i := range seen {
		if seen[i] != paid[len(paid)-1-i] {
			t.Fatalf("pages not newest first: %v, published %v", seen, paid)
		}
	}
}

// FuzzNewSigner checks that any secret either yields a signer or an error
// that does not echo it, and never panics.
func FuzzNewSigner(f *testing.F) {
	for _, s := range []string{"", "whsec_", vectorSecret, "whsec_!!", "raw secret", "whsec_" + strings.Repeat("A", 1000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, secret string) {
		s, err := events.NewSigner(secret)
		if err != nil {
			if len(secret) > len("whsec_")+4 && strings.Contains(err.Error(), secret) {
				t.Fatalf("error echoes the secret: %v", err)
			}
			return
		}
		if sig := s.Sign("evt_1", time.Unix(1, 0), []byte("{}")); !strings.HasPrefix(sig, "v1,") {
			t.Fatalf("signature %q", sig)
		}
	})
}
