package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// eventsSecret is the business backend's Standard Webhooks secret in these tests.
const eventsSecret = "whsec_bWluaWdhdGUtZTJlLWV2ZW50cy1zZWNyZXQtMDEyMzQ1"

// backend is a business backend receiving minigate's events. It verifies
// every delivery with its own Standard Webhooks verifier and answers 400 to
// anything that does not verify.
type backend struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []received
	badSigs int
}

type received struct {
	ID   string
	Type string
	Data json.RawMessage
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := verifyStandardWebhook(eventsSecret, r.Header, body, time.Now()); err != nil {
			b.mu.Lock()
			b.badSigs++
			b.mu.Unlock()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ev received
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get("webhook-id") {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.got = append(b.got, ev)
		b.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) events() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got)
}

// verifyStandardWebhook checks a delivery as a receiver following the
// Standard Webhooks specification would.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || id == "" {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("stale webhook-timestamp")
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return errors.New("signature mismatch")
}

// messageData is the data of a message.received event.
type messageData struct {
	App     string `json:"app"`
	OpenID  string `json:"openid"`
	Message struct {
		ID            string         `json:"id"`
		Type          string         `json:"type"`
		Event         string         `json:"event"`
		Content       string         `json:"content"`
		PlatformMsgID string         `json:"platform_msg_id"`
		Fields        map[string]any `json:"fields"`
	} `json:"message"`
}

func push(t *testing.T, e *testenv.Env, app, user string, req sandbox.PushRequest) *sandbox.Report {
	t.Helper()
	rep, err := e.Sandbox.Push(context.Background(), e.SandboxApp(app), user, req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	return rep
}

func count(t *testing.T, db *sqlx.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Get(&n, query, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitEvents waits until the backend has n events and returns them.
func waitEvents(t *testing.T, b *backend, n int) []received {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d events at the backend", n), func() bool { return len(b.events()) >= n })
	return b.events()
}

func TestMessagePushesInEveryModeAndFormat(t *testing.T) {
	t.Parallel()
	be := newBackend(t)
	var apps []sandbox.AppSpec
	for _, p := range []string{sandbox.WeChat, sandbox.QQ} {
		for _, mode := range []string{sandbox.PushModePlaintext, sandbox.PushModeCompatible, sandbox.PushModeSafe} {
			apps = append(apps, sandbox.AppSpec{ID: p + "-" + mode, Platform: p, MessageMode: mode})
		}
	}
	e := testenv.Start(t, testenv.Spec{Apps: apps, Events: config.Events{URL: be.srv.URL, Secret: eventsSecret}})

	type sent struct{ app, content string }
	var want []sent
	var mu sync.Mutex
	t.Run("pushes", func(t *testing.T) {
		for _, as := range apps {
			for _, format := range []string{sandbox.PushFormatXML, sandbox.PushFormatJSON} {
				t.Run(as.ID+"/"+format, func(t *testing.T) {
					t.Parallel()
					content := "hi from " + as.ID + " in " + format + " ✓ <&>"
					rep := push(t, e, as.ID, "alice", sandbox.PushRequest{Type: "text", Content: content, Format: format})
					d := rep.Deliveries[0]
					if d.Status != 200 || d.Body != "success" {
						t.Fatalf("minigate answered %d %q (%s)", d.Status, d.Body, d.Error)
					}
					if d.DurationMS > 1000 {
						t.Fatalf("answered in %d ms, want well under a second", d.DurationMS)
					}
					t.Logf("answered success in %d ms", d.DurationMS)
					id := e.App(as.ID).ID
					if n := count(t, e.DB, `SELECT count(*) FROM messages WHERE app = $1 AND content = $2 AND direction = 'in'`, id, content); n != 1 {
						t.Fatalf("%d inbox messages with the content, want 1", n)
					}
					mu.Lock()
					want = append(want, sent{id, content})
					mu.Unlock()
				})
			}
		}
	})
	got := waitEvents(t, be, len(want))
	time.Sleep(300 * time.Millisecond) // nothing more may arrive
	if got = be.events(); len(got) != len(want) || be.badSigs != 0 {
		t.Fatalf("backend got %d events (%d with bad signatures), want %d", len(got), be.badSigs, len(want))
	}
	for _, w := range want {
		n := 0
		for _, ev := range got {
			var d messageData
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatal(err)
			}
			if ev.Type == "message.received" && d.App == w.app && d.Message.Content == w.content && d.Message.Type == "text" && d.OpenID != "" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d message.received events for %s %q, want 1", n, w.app, w.content)
		}
	}
}

func TestMessageTypesAreStored(t *testing.T) {
	t.Parallel()
	be := newBackend(t)
	e := testenv.Start(t, testenv.Spec{
		Apps:   []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat, MessageFormat: sandbox.PushFormatJSON}},
		Events: config.Events{URL: be.srv.URL, Secret: eventsSecret},
	})
	app := e.App("wx").ID
	for _, tc := range []struct {
		name      string
		req       sandbox.PushRequest
		typ, evt  string
		hasFields bool // unknown types and events keep every field
	}{
		{name: "text", req: sandbox.PushRequest{Type: "text", Content: "hello"}, typ: "text"},
		{name: "image", req: sandbox.PushRequest{Type: "image"}, typ: "image"},
		{name: "miniprogrampage", req: sandbox.PushRequest{Type: "miniprogrampage", Title: "Shoes", PagePath: "pages/item?id=1"}, typ: "miniprogrampage"},
		{name: "enter session", req: sandbox.PushRequest{Type: "event", SessionFrom: "order-7"}, typ: "event", evt: "user_enter_tempsession"},
		{name: "unknown event", req: sandbox.PushRequest{Type: "event", Event: "wxa_media_check"}, typ: "event", evt: "wxa_media_check", hasFields: true},
		{name: "unknown type", req: sandbox.PushRequest{Type: "video_future", Content: "?"}, typ: "video_future", hasFields: true},
	} {
		rep := push(t, e, "wx", "bob", tc.req)
		if d := rep.Deliveries[0]; d.Status != 200 || d.Body != "success" {
			t.Fatalf("%s: minigate answered %d %q", tc.name, d.Status, d.Body)
		}
		var row struct {
			Type   string  `db:"type"`
			Event  string  `db:"event"`
			Fields *string `db:"fields"`
		}
		if err := e.DB.Get(&row, `SELECT type, event, fields::text AS fields FROM messages WHERE app = $1 ORDER BY received_at DESC, id DESC LIMIT 1`, app); err != nil {
			t.Fatal(err)
		}
		if row.Type != tc.typ || row.Event != tc.evt || (row.Fields != nil) != tc.hasFields {
			t.Fatalf("%s: stored %+v, want type %s event %q fields kept %v", tc.name, row, tc.typ, tc.evt, tc.hasFields)
		}
	}
	var conv struct {
		Unanswered int        `db:"unanswered"`
		Entered    *time.Time `db:"session_entered_at"`
		Preview    string     `db:"last_message_preview"`
	}
	if err := e.DB.Get(&conv, `SELECT unanswered, session_entered_at, last_message_preview FROM conversations WHERE app = $1`, app); err != nil {
		t.Fatal(err)
	}
	if conv.Unanswered != 4 || conv.Entered == nil || conv.Preview != "[video_future]" {
		t.Fatalf("conversation %+v, want 4 unanswered user messages and the session entered", conv)
	}
	waitEvents(t, be, 6)
}

func TestForgedPushesLeaveNoTrace(t *testing.T) {
	t.Parallel()
	be := newBackend(t)
	e := testenv.Start(t, testenv.Spec{
		Apps: []sandbox.AppSpec{
			{ID: "safe", Platform: sandbox.WeChat, MessageMode: sandbox.PushModeSafe},
			{ID: "compat", Platform: sandbox.QQ, MessageMode: sandbox.PushModeCompatible},
			{ID: "plain", Platform: sandbox.WeChat, MessageMode: sandbox.PushModePlaintext},
		},
		Events:    config.Events{URL: be.srv.URL, Secret: eventsSecret},
		Configure: func(c *config.Config) { c.Limits.BodyBytes = 2048 },
	})
	type tc struct {
		app    string
		format string
		faults sandbox.Faults
		size   int // content bytes (0: short)
		status int
		reason string
	}
	var cases []tc
	for _, app := range []string{"safe", "compat"} {
		for _, format := range []string{sandbox.PushFormatXML, sandbox.PushFormatJSON} {
			cases = append(cases,
				tc{app, format, sandbox.Faults{BadSignature: true}, 0, 401, "bad_signature"},
				tc{app, format, sandbox.Faults{BadMsgSignature: true}, 0, 401, "bad_msg_signature"},
				tc{app, format, sandbox.Faults{StaleTimestamp: true}, 0, 401, "stale_timestamp"},
				tc{app, format, sandbox.Faults{ForeignAppID: true}, 0, 403, "foreign_app"},
				tc{app, format, sandbox.Faults{TamperCiphertext: true}, 0, 401, "bad_ciphertext"},
				tc{app, format, sandbox.Faults{Truncate: true}, 0, 400, "malformed"},
				tc{app, format, sandbox.Faults{}, 3000, 413, "body_too_large"},
			)
		}
	}
	for _, format := range []string{sandbox.PushFormatXML, sandbox.PushFormatJSON} {
		cases = append(cases,
			tc{"plain", format, sandbox.Faults{BadSignature: true}, 0, 401, "bad_signature"},
			tc{"plain", format, sandbox.Faults{StaleTimestamp: true}, 0, 401, "stale_timestamp"},
			tc{"plain", format, sandbox.Faults{Truncate: true}, 0, 400, "malformed"},
			tc{"plain", format, sandbox.Faults{}, 3000, 413, "body_too_large"},
		)
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/%s/%+v/%d", c.app, c.format, c.faults, c.size)
		content := "forged?"
		if c.size > 0 {
			content = strings.Repeat("x", c.size)
		}
		rep := push(t, e, c.app, "mallory", sandbox.PushRequest{Type: "text", Content: content, Format: c.format, Faults: c.faults})
		if d := rep.Deliveries[0]; d.Status != c.status || d.Body == "success" {
			t.Fatalf("%s: minigate answered %d %q, want %d", name, d.Status, d.Body, c.status)
		}
		var reason string
		if err := e.DB.Get(&reason, `SELECT reason FROM rejected_callbacks WHERE app = $1 ORDER BY id DESC LIMIT 1`, e.App(c.app).ID); err != nil {
			t.Fatalf("%s: no rejected_callbacks row: %v", name, err)
		}
		if reason != c.reason {
			t.Fatalf("%s: rejected as %s, want %s", name, reason, c.reason)
		}
	}
	for _, table := range []string{"callbacks", "messages", "conversations", "events"} {
		if n := count(t, e.DB, `SELECT count(*) FROM `+table); n != 0 {
			t.Fatalf("%d rows in %s after forged pushes only, want 0", n, table)
		}
	}
	if n := count(t, e.DB, `SELECT count(*) FROM rejected_callbacks`); n != len(cases) {
		t.Fatalf("%d rejected rows, want %d", n, len(cases))
	}
	// The operator API lists them, without bodies.
	r := e.Do("GET", "/v1/rejected-callbacks?limit=3&app="+e.App("plain").ID, nil, testenv.Operator())
	var page struct {
		Data []map[string]any `json:"data"`
		Next string           `json:"next_cursor"`
	}
	r.Decode(t, &page)
	if r.Status != 200 || len(page.Data) != 3 || page.Next == "" || page.Data[0]["body"] != nil {
		t.Fatalf("GET /v1/rejected-callbacks = %d %s", r.Status, r.Body)
	}
	if len(be.events()) != 0 {
		t.Fatal("forged pushes produced events")
	}
}

func TestConcurrentDuplicatePushes(t *testing.T) {
	t.Parallel()
	be := newBackend(t)
	e := testenv.Start(t, testenv.Spec{
		Apps:   []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}},
		Events: config.Events{URL: be.srv.URL, Secret: eventsSecret},
	})
	rep := push(t, e, "wx", "carol", sandbox.PushRequest{Type: "text", Content: "once", Faults: sandbox.Faults{Duplicates: 49}})
	if len(rep.Deliveries) != 50 {
		t.Fatalf("%d deliveries, want 50", len(rep.Deliveries))
	}
	var durations []int64
	for i, d := range rep.Deliveries {
		if d.Status != 200 || d.Body != "success" {
			t.Fatalf("delivery %d: %d %q (%s)", i, d.Status, d.Body, d.Error)
		}
		durations = append(durations, d.DurationMS)
	}
	slices.Sort(durations)
	t.Logf("50 concurrent deliveries: p50 %d ms, max %d ms", durations[len(durations)/2], durations[len(durations)-1])
	if durations[len(durations)-1] > 2000 {
		t.Fatalf("slowest reply %d ms", durations[len(durations)-1])
	}
	app := e.App("wx").ID
	if n := count(t, e.DB, `SELECT count(*) FROM messages WHERE app = $1`, app); n != 1 {
		t.Fatalf("%d stored messages, want 1", n)
	}
	if n := count(t, e.DB, `SELECT count(*) FROM events WHERE type = 'message.received'`); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	if n := count(t, e.DB, `SELECT unanswered FROM conversations WHERE app = $1`, app); n != 1 {
		t.Fatalf("unanswered = %d, want 1", n)
	}
	waitEvents(t, be, 1)
	time.Sleep(300 * time.Millisecond)
	if n := len(be.events()); n != 1 {
		t.Fatalf("backend got %d events, want 1", n)
	}
	metrics := string(e.Do("GET", "/metrics", nil).Body)
	for _, want := range []string{
		`minigate_callbacks_total{app="` + app + `",kind="messages",outcome="accepted"} 1`,
		`minigate_callbacks_total{app="` + app + `",kind="messages",outcome="duplicate"} 49`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
}

func TestURLVerification(t *testing.T) {
	t.Parallel()
	// The published vector: token AAAAA, timestamp 1714036504, nonce
	// 1514711492 → signature f464b24f…; the clock is set to the vector's
	// time so the timestamp window accepts it.
	const (
		token, ts, nonce = "AAAAA", "1714036504", "1514711492"
		signature        = "f464b24fc39322e44b38aa78f5edd27bd1441696"
	)
	e := testenv.Start(t, testenv.Spec{
		Apps:      []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}},
		Configure: func(c *config.Config) { c.Apps[0].Messages.Token = token },
		Now:       func() time.Time { return time.Unix(1714036504, 0) },
	})
	path := "/callbacks/" + e.App("wx").ID + "/messages?"
	for _, tc := range []struct {
		name   string
		query  url.Values
		status int
		body   string
	}{
		{"valid", url.Values{"signature": {signature}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {"echo-7781"}}, 200, "echo-7781"},
		{"bad signature", url.Values{"signature": {strings.Repeat("0", 40)}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {"echo-7781"}}, 401, ""},
		{"other nonce", url.Values{"signature": {signature}, "timestamp": {ts}, "nonce": {"1"}, "echostr": {"echo-7781"}}, 401, ""},
		{"no signature", url.Values{"timestamp": {ts}, "nonce": {nonce}, "echostr": {"echo-7781"}}, 401, ""},
	} {
		r := e.Do("GET", path+tc.query.Encode(), nil)
		if r.Status != tc.status || (tc.body != "" && string(r.Body) != tc.body) || (tc.status != 200 && strings.Contains(string(r.Body), "echo-7781")) {
			t.Fatalf("%s: %d %q, want %d %q", tc.name, r.Status, r.Body, tc.status, tc.body)
		}
	}
	if n := count(t, e.DB, `SELECT count(*) FROM rejected_callbacks WHERE method = 'GET'`); n != 3 {
		t.Fatalf("%d rejected GETs kept, want 3", n)
	}
	if r := e.Do("GET", "/callbacks/nope/messages?echostr=x", nil); r.Status != 404 {
		t.Fatalf("unknown app: %d", r.Status)
	}
}

func TestAlipayMessages(t *testing.T) {
	t.Parallel()
	be := newBackend(t)
	e := testenv.Start(t, testenv.Spec{
		Apps:   []sandbox.AppSpec{{ID: "ali", Platform: sandbox.Alipay}},
		Events: config.Events{URL: be.srv.URL, Secret: eventsSecret},
	})
	rep := push(t, e, "ali", "dave", sandbox.PushRequest{Type: "text", Content: "支付宝你好", Faults: sandbox.Faults{Duplicates: 4}})
	for i, d := range rep.Deliveries {
		if d.Status != 200 || d.Body != "success" {
			t.Fatalf("delivery %d: %d %q", i, d.Status, d.Body)
		}
	}
	for _, f := range []sandbox.Faults{{BadSignature: true}, {StaleTimestamp: true}, {ForeignAppID: true}, {Truncate: true}} {
		rep := push(t, e, "ali", "dave", sandbox.PushRequest{Type: "text", Content: "forged", Faults: f})
		if d := rep.Deliveries[0]; d.Status < 400 || d.Status > 499 || d.Body == "success" {
			t.Fatalf("%+v: %d %q, want a 4xx", f, d.Status, d.Body)
		}
	}
	app := e.App("ali").ID
	if n := count(t, e.DB, `SELECT count(*) FROM messages WHERE app = $1`, app); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
	if n := count(t, e.DB, `SELECT count(*) FROM rejected_callbacks WHERE app = $1`, app); n != 4 {
		t.Fatalf("%d rejected, want 4", n)
	}
	got := waitEvents(t, be, 1)
	var d messageData
	if err := json.Unmarshal(got[0].Data, &d); err != nil || d.Message.Content != "支付宝你好" {
		t.Fatalf("event data %s (%v)", got[0].Data, err)
	}
}

func TestDatabaseDownNothingAcknowledged(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewURL(t)
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}}, DatabaseURL: dbURL})
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := sqlx.MustConnect("postgres", pgtest.ServerURL())
	defer admin.Close()
	setAllowed := func(allowed bool) {
		t.Helper()
		if _, err := admin.Exec(fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS %t`, name, allowed)); err != nil {
			t.Fatal(err)
		}
		if !allowed {
			if _, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, name); err != nil {
				t.Fatal(err)
			}
		}
	}
	setAllowed(false)
	req := sandbox.PushRequest{Type: "text", Content: "while down", MsgID: 777000111, CreateTime: time.Now().Unix()}
	rep := push(t, e, "wx", "erin", req)
	if d := rep.Deliveries[0]; d.Status < 500 || d.Body == "success" {
		setAllowed(true)
		t.Fatalf("database down: minigate answered %d %q, want a 5xx", d.Status, d.Body)
	}
	setAllowed(true)
	// The platform retries the same message; now it is stored, once.
	testenv.Eventually(t, 10*time.Second, "the retry to be acknowledged", func() bool {
		d := push(t, e, "wx", "erin", req).Deliveries[0]
		return d.Status == 200 && d.Body == "success"
	})
	if n := count(t, e.DB, `SELECT count(*) FROM messages WHERE platform_msg_id = '777000111'`); n != 1 {
		t.Fatalf("%d messages after recovery, want 1", n)
	}
}

func TestEventsAPI(t *testing.T) {
	t.Parallel()
	t.Run("delivered, listed, redelivered", func(t *testing.T) {
		t.Parallel()
		be := newBackend(t)
		e := testenv.Start(t, testenv.Spec{
			Apps:   []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}},
			Events: config.Events{URL: be.srv.URL, Secret: eventsSecret},
		})
		push(t, e, "wx", "frank", sandbox.PushRequest{Type: "text", Content: "list me"})
		got := waitEvents(t, be, 1)
		var ev struct {
			ID         string `json:"id"`
			State      string `json:"state"`
			Attempts   int    `json:"attempts"`
			Deliveries []struct {
				Status int `json:"status"`
			} `json:"deliveries"`
		}
		testenv.Eventually(t, 5*time.Second, "state delivered", func() bool {
			e.Do("GET", "/v1/events/"+got[0].ID, nil, testenv.Operator()).Decode(t, &ev)
			return ev.State == "delivered"
		})
		if ev.Attempts != 1 || len(ev.Deliveries) != 1 || ev.Deliveries[0].Status != 200 {
			t.Fatalf("event %+v", ev)
		}
		r := e.Do("GET", "/v1/events?type=message.received&state=delivered", nil, testenv.Operator())
		var page struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		r.Decode(t, &page)
		if r.Status != 200 || len(page.Data) != 1 || page.Data[0].ID != got[0].ID {
			t.Fatalf("list = %d %s", r.Status, r.Body)
		}
		if r := e.Do("POST", "/v1/events/"+got[0].ID+"/redeliver", nil, testenv.Operator()); r.Status != 202 {
			t.Fatalf("redeliver = %d %s", r.Status, r.Body)
		}
		again := waitEvents(t, be, 2)
		if again[1].ID != got[0].ID {
			t.Fatalf("redelivered %s, want %s", again[1].ID, got[0].ID)
		}
		for _, tc := range []struct {
			method, path string
			status       int
		}{
			{"GET", "/v1/events?state=bogus", 400},
			{"GET", "/v1/events?cursor=nope", 400},
			{"GET", "/v1/events?limit=0", 400},
			{"GET", "/v1/events/evt_01JD8X3Z6Q4V9K2M7N5P8R1T3W", 404},
			{"POST", "/v1/events/evt_01JD8X3Z6Q4V9K2M7N5P8R1T3W/redeliver", 404},
		} {
			if r := e.Do(tc.method, tc.path, nil, testenv.Operator()); r.Status != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, r.Status, r.Body, tc.status)
			}
		}
		if r := e.Do("GET", "/v1/events", nil); r.Status != 401 {
			t.Fatalf("without an API key: %d", r.Status)
		}
	})
	t.Run("no events URL: recorded, not sent", func(t *testing.T) {
		t.Parallel()
		e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}}})
		push(t, e, "wx", "gina", sandbox.PushRequest{Type: "text", Content: "nobody listens"})
		r := e.Do("GET", "/v1/events", nil, testenv.Operator())
		var page struct {
			Data []struct {
				ID    string      `json:"id"`
				State string      `json:"state"`
				Data  messageData `json:"data"`
			} `json:"data"`
		}
		r.Decode(t, &page)
		if len(page.Data) != 1 || page.Data[0].State != "not_configured" || page.Data[0].Data.Message.Content != "nobody listens" {
			t.Fatalf("events = %s", r.Body)
		}
		if r := e.Do("POST", "/v1/events/"+page.Data[0].ID+"/redeliver", nil, testenv.Operator()); r.Status != 409 || r.ErrorCode() != "events_not_configured" {
			t.Fatalf("redeliver without URL = %d %s", r.Status, r.Body)
		}
		if n := count(t, e.DB, `SELECT count(*) FROM river_job WHERE kind = 'event_deliver'`); n != 0 {
			t.Fatalf("%d delivery jobs without an events URL", n)
		}
	})
}
