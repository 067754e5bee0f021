package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/pgtest"
)

// The pipeline is generic; these tests drive it with a minimal channel of
// their own ("test" callbacks: a JSON body, "forged" means a bad signature)
// and an effect table, so that each guarantee is checked in isolation. The
// message and payment channels are tested end to end through the simulator.

type testPayload struct {
	ID     string `json:"id"`
	Forged bool   `json:"forged"`
	Note   string `json:"note"`
	// Refuse makes Apply refuse the callback (as orders does for a
	// foreign merchant); Fail makes Apply fail (a temporary error).
	Refuse bool `json:"refuse"`
	Fail   bool `json:"fail"`
}

type pipelineEnv struct {
	db *sqlx.DB
	p  *Pipeline
}

func setupPipeline(t *testing.T, opts Options) *pipelineEnv {
	t.Helper()
	db := pgtest.New(t)
	if _, err := db.Exec(`CREATE TABLE test_effects (id text NOT NULL, callback_id bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return &pipelineEnv{db: db, p: NewPipeline(db, opts)}
}

var testAck = TextReply(http.StatusOK, "success")

func testSpec() Spec[testPayload] {
	return Spec[testPayload]{
		App:  "app-1",
		Kind: KindMessages,
		Open: func(_ context.Context, req Request) (Opened[testPayload], error) {
			var p testPayload
			if err := json.Unmarshal(req.Body, &p); err != nil {
				return Opened[testPayload]{}, Reject(RejectMalformed, "body: %v", err)
			}
			if p.Forged {
				return Opened[testPayload]{}, Reject(RejectBadSignature, "signature mismatch")
			}
			return Opened[testPayload]{DedupKey: p.ID, EventType: "test", Summary: map[string]any{"id": p.ID}, Payload: p}, nil
		},
		Apply: func(ctx context.Context, tx *sqlx.Tx, cb Callback, p testPayload) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO test_effects (id, callback_id) VALUES ($1, $2)`, p.ID, cb.ID); err != nil {
				return err
			}
			switch {
			case p.Refuse:
				return Reject(RejectForeignMerchant, "not our merchant")
			case p.Fail:
				return errors.New("temporary failure")
			}
			return nil
		},
		Ack: testAck,
	}
}

func testRequest(body string) Request {
	q := url.Values{"signature": {"abc123"}, "timestamp": {"1700000000"}, "openid": {"o-user"}}
	h := http.Header{"Content-Type": {"application/json"}, "Wechatpay-Signature": {"sig"}}
	return Request{Method: "POST", Query: q, Header: h, Body: []byte(body), RemoteAddr: "192.0.2.1", ReceivedAt: time.Now()}
}

func (e *pipelineEnv) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.db.Get(&n, `SELECT count(*) FROM `+table); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPipeline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		body       string
		status     int
		stored     int    // callbacks rows afterwards
		effects    int    // test_effects rows afterwards
		rejected   string // the rejected_callbacks reason, "" for none
		replyEqual bool   // the reply is the Ack
	}{
		{name: "accepted", body: `{"id":"m1"}`, status: 200, stored: 1, effects: 1, replyEqual: true},
		{name: "forged signature", body: `{"id":"m1","forged":true}`, status: 401, rejected: "bad_signature"},
		{name: "malformed body", body: `{"id":`, status: 400, rejected: "malformed"},
		{name: "oversize body", body: `{"id":"m1","note":"` + strings.Repeat("x", 5000) + `"}`, status: 413, rejected: "body_too_large"},
		{name: "refused by apply", body: `{"id":"m1","refuse":true}`, status: 403, rejected: "foreign_merchant"},
		{name: "apply fails", body: `{"id":"m1","fail":true}`, status: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setupPipeline(t, Options{BodyLimit: 4096})
			rep := Process(context.Background(), e.p, testSpec(), testRequest(tc.body))
			if rep.Status != tc.status {
				t.Fatalf("status = %d (%s), want %d", rep.Status, rep.Body, tc.status)
			}
			if got := bytes.Equal(rep.Body, testAck.Body) && rep.Status == testAck.Status; got != tc.replyEqual {
				t.Fatalf("reply %q: acknowledged = %v, want %v", rep.Body, got, tc.replyEqual)
			}
			if n := e.count(t, "callbacks"); n != tc.stored {
				t.Fatalf("%d callbacks stored, want %d", n, tc.stored)
			}
			if n := e.count(t, "test_effects"); n != tc.effects {
				t.Fatalf("%d effects, want %d (apply's writes must commit or roll back with the callback)", n, tc.effects)
			}
			list, err := ListRejected(context.Background(), e.db, RejectedFilter{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if tc.rejected == "" {
				if len(list) != 0 {
					t.Fatalf("rejected rows %+v, want none", list)
				}
				return
			}
			if len(list) != 1 || list[0].Reason != tc.rejected || list[0].App != "app-1" || list[0].BodySize != len(tc.body) {
				t.Fatalf("rejected rows %+v, want one with reason %s", list, tc.rejected)
			}
			if got := list[0].Query["signature"]; len(got) != 1 || got[0] != Redacted {
				t.Fatalf("signature kept as %v, want it redacted", got)
			}
			if got := list[0].Headers["Wechatpay-Signature"]; len(got) != 1 || got[0] != Redacted {
				t.Fatalf("signature header kept as %v, want it redacted", got)
			}
			if got := list[0].Query["openid"]; len(got) != 1 || got[0] != "o-user" {
				t.Fatalf("openid = %v, want it kept for inspection", got)
			}
			var body []byte
			if err := e.db.Get(&body, `SELECT body FROM rejected_callbacks`); err != nil {
				t.Fatal(err)
			}
			if want := min(len(tc.body), rejectedBodyKept); len(body) != want || !bytes.Equal(body, []byte(tc.body)[:want]) {
				t.Fatalf("kept %d body bytes, want the first %d", len(body), want)
			}
		})
	}
}

func TestPipelineDuplicatesChangeNothing(t *testing.T) {
	t.Parallel()
	e := setupPipeline(t, Options{})
	for i := range 3 {
		rep := Process(context.Background(), e.p, testSpec(), testRequest(`{"id":"m1"}`))
		if rep.Status != 200 || string(rep.Body) != "success" {
			t.Fatalf("delivery %d: %d %s", i+1, rep.Status, rep.Body)
		}
	}
	// Same key in another kind or app is another callback.
	other := testSpec()
	other.Kind = KindPayments
	if rep := Process(context.Background(), e.p, other, testRequest(`{"id":"m1"}`)); rep.Status != 200 {
		t.Fatalf("payments: %d", rep.Status)
	}
	other.App = "app-2"
	if rep := Process(context.Background(), e.p, other, testRequest(`{"id":"m1"}`)); rep.Status != 200 {
		t.Fatalf("app-2: %d", rep.Status)
	}
	if n := e.count(t, "callbacks"); n != 3 {
		t.Fatalf("%d callbacks, want 3 (one per app and kind)", n)
	}
	if n := e.count(t, "test_effects"); n != 3 {
		t.Fatalf("%d effects, want 3", n)
	}
}

func TestPipelineConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	e := setupPipeline(t, Options{})
	const n = 50
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = Process(context.Background(), e.p, testSpec(), testRequest(`{"id":"same"}`)).Status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("delivery %d: status %d", i, s)
		}
	}
	if got := e.count(t, "callbacks"); got != 1 {
		t.Fatalf("%d callbacks, want 1", got)
	}
	if got := e.count(t, "test_effects"); got != 1 {
		t.Fatalf("%d effects, want exactly 1", got)
	}
}

func TestPipelineRetryAfterFailureStores(t *testing.T) {
	t.Parallel()
	e := setupPipeline(t, Options{})
	if rep := Process(context.Background(), e.p, testSpec(), testRequest(`{"id":"m1","fail":true}`)); rep.Status != 503 {
		t.Fatalf("failing apply: %d", rep.Status)
	}
	// The platform retries; the same key is not taken by the failed attempt.
	if rep := Process(context.Background(), e.p, testSpec(), testRequest(`{"id":"m1"}`)); rep.Status != 200 {
		t.Fatalf("retry: %d", rep.Status)
	}
	if n := e.count(t, "test_effects"); n != 1 {
		t.Fatalf("%d effects after the retry, want 1", n)
	}
}

func TestPipelineDatabaseDown(t *testing.T) {
	t.Parallel()
	e := setupPipeline(t, Options{})
	// Another pool on the same database, closed: every query fails.
	down := sqlx.NewDb(e.db.DB, "postgres")
	p := NewPipeline(down, Options{Logger: e.p.log})
	if err := down.Close(); err != nil {
		t.Fatal(err)
	}
	rep := Process(context.Background(), p, testSpec(), testRequest(`{"id":"m1"}`))
	if rep.Status != http.StatusServiceUnavailable || string(rep.Body) == "success" {
		t.Fatalf("database down: %d %s, want 503 and no acknowledgement", rep.Status, rep.Body)
	}
}

func TestRejectedCallbacksAreBounded(t *testing.T) {
	t.Parallel()
	e := setupPipeline(t, Options{RejectedKept: 3})
	for i := range 7 {
		body := `{"forged":true,"id":"` + string(rune('a'+i)) + `"}`
		if rep := Process(context.Background(), e.p, testSpec(), testRequest(body)); rep.Status != 401 {
			t.Fatalf("forged %d: %d", i, rep.Status)
		}
	}
	list, err := ListRejected(context.Background(), e.db, RejectedFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("%d rejected rows kept, want 3", len(list))
	}
	var bodies []string
	if err := e.db.Select(&bodies, `SELECT convert_from(body, 'UTF8') FROM rejected_callbacks ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	for i, b := range bodies {
		if want := `"id":"` + string(rune('e'+i)) + `"`; !strings.Contains(b, want) {
			t.Fatalf("kept %v, want the 3 newest", bodies)
		}
	}
}

func TestCleanText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"hello", "hello"},
		{"a\x00b", "a\uFFFDb"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"中文 ✓", "中文 ✓"},
	} {
		if got := CleanText(tc.in); got != tc.want {
			t.Errorf("CleanText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRejectStatus(t *testing.T) {
	t.Parallel()
	for reason, want := range map[RejectReason]int{
		RejectTooLarge: 413, RejectMalformed: 400, RejectUnsupported: 400,
		RejectForeignApp: 403, RejectForeignMerchant: 403,
		RejectBadSignature: 401, RejectBadMsgSignature: 401, RejectMissingSignature: 401,
		RejectStaleTimestamp: 401, RejectBadCiphertext: 401, RejectReason("unknown_order"): 400,
	} {
		if got := RejectStatus(reason); got != want {
			t.Errorf("RejectStatus(%s) = %d, want %d", reason, got, want)
		}
	}
}
