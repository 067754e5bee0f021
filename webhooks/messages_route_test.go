package webhooks

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/jmoiron/sqlx"
)

// routeVerifier opens JSON pushes without any signature: the routing
// tests are about what happens after the verifier.
type routeVerifier struct{}

func (routeVerifier) VerifyURL(Request) (string, error) { return "", nil }

func (routeVerifier) OpenMessage(req Request) (*Message, error) {
	fields := map[string]any{}
	if err := json.Unmarshal(req.Body, &fields); err != nil {
		return nil, Reject(RejectMalformed, "%v", err)
	}
	msg := &Message{Fields: fields, MsgType: "event", FromUserName: "oOfficial"}
	msg.Event, _ = fields["Event"].(string)
	ct, _ := fields["CreateTime"].(float64)
	msg.CreateTime = int64(ct)
	return msg, nil
}

func (routeVerifier) Ack() Reply { return TextReply(http.StatusOK, "success") }

// effectSink records the pushes the MessageSink receives.
type effectSink struct{}

func (effectSink) ReceiveMessage(ctx context.Context, tx *sqlx.Tx, cb Callback, msg *Message) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO test_effects (id, callback_id) VALUES ($1, $2)`, "sink:"+msg.Event, cb.ID)
	return err
}

// A routed event goes to its route (typed payload, its own de-duplication
// key, its own reply); other events, and the same event of an app without
// the route, go to the sink as before.
func TestMessageEventRoutes(t *testing.T) {
	t.Parallel()
	e := setupPipeline(t, Options{})
	jsonAck := Reply{Status: http.StatusOK, ContentType: "application/json", Body: []byte(`{"ErrCode":0}`)}
	type order struct{ No string }
	route := RouteEvent(func(msg *Message) (Opened[*order], error) {
		no, _ := msg.Fields["OrderNo"].(string)
		if no == "" {
			return Opened[*order]{}, Reject(RejectMalformed, "no OrderNo")
		}
		return Opened[*order]{DedupKey: "paid:" + no, Payload: &order{No: no}}, nil
	}, func(ctx context.Context, tx *sqlx.Tx, cb Callback, o *order) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO test_effects (id, callback_id) VALUES ($1, $2)`, "route:"+o.No, cb.ID)
		return err
	}, jsonAck)
	m := NewMessages(e.p, map[string]MessageVerifier{"app-1": routeVerifier{}, "app-2": routeVerifier{}}, effectSink{},
		EventRoutes{"app-1": {"paid_notify": route}})
	push := func(app string, createTime int, body string) Reply {
		t.Helper()
		b := `{"CreateTime":` + strconv.Itoa(createTime) + `,` + body + `}`
		return Process(context.Background(), e.p, m.specs[app], testRequest(b))
	}
	effects := func() []string {
		var ids []string
		if err := e.db.Select(&ids, `SELECT id FROM test_effects ORDER BY callback_id`); err != nil {
			t.Fatal(err)
		}
		return ids
	}

	if rep := push("app-1", 1, `"Event":"paid_notify","OrderNo":"A1"`); rep.Status != 200 || string(rep.Body) != `{"ErrCode":0}` {
		t.Fatalf("routed: %d %s", rep.Status, rep.Body)
	}
	// A retry with another CreateTime is the same push for the route.
	if rep := push("app-1", 2, `"Event":"paid_notify","OrderNo":"A1"`); rep.Status != 200 || string(rep.Body) != `{"ErrCode":0}` {
		t.Fatalf("routed duplicate: %d %s", rep.Status, rep.Body)
	}
	if rep := push("app-1", 3, `"Event":"other_event"`); string(rep.Body) != "success" {
		t.Fatalf("unrouted: %s", rep.Body)
	}
	if rep := push("app-2", 4, `"Event":"paid_notify","OrderNo":"A2"`); string(rep.Body) != "success" {
		t.Fatalf("app without the route: %s", rep.Body)
	}
	if rep := push("app-1", 5, `"Event":"paid_notify"`); rep.Status != http.StatusBadRequest {
		t.Fatalf("unreadable routed push: %d", rep.Status)
	}
	got := effects()
	want := []string{"route:A1", "sink:other_event", "sink:paid_notify"}
	if len(got) != len(want) {
		t.Fatalf("effects %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("effects %v, want %v", got, want)
		}
	}
	var stored string
	if err := e.db.Get(&stored, `SELECT payload::text FROM callbacks WHERE dedup_key = 'paid:A1'`); err != nil || stored == "{}" {
		t.Fatalf("stored payload %q, %v", stored, err)
	}
	if n := e.count(t, "rejected_callbacks"); n != 1 {
		t.Fatalf("%d rejected callbacks", n)
	}
}
