package customerservice_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/webhooks"
)

type conversation struct {
	LastMessageID      *string    `db:"last_message_id"`
	LastMessageType    *string    `db:"last_message_type"`
	LastMessagePreview *string    `db:"last_message_preview"`
	LastMessageAt      *time.Time `db:"last_message_at"`
	LastUserMessageAt  *time.Time `db:"last_user_message_at"`
	SessionEnteredAt   *time.Time `db:"session_entered_at"`
	Unanswered         int        `db:"unanswered"`
	LastActivityAt     time.Time  `db:"last_activity_at"`
}

type inboxEnv struct {
	db    *sqlx.DB
	inbox *customerservice.Inbox
	evs   *events.Service
	cbID  int64
}

func setupInbox(t *testing.T) *inboxEnv {
	t.Helper()
	db := pgtest.New(t)
	// No events URL: events are recorded (not_configured) without a queue.
	evs, err := events.New(db, events.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return &inboxEnv{db: db, evs: evs, inbox: customerservice.NewInbox(evs, nil)}
}

func (e *inboxEnv) receive(t *testing.T, msg *webhooks.Message) {
	t.Helper()
	tx, err := e.db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	e.cbID++
	cb := webhooks.Callback{ID: e.cbID, App: "shop", Kind: webhooks.KindMessages, ReceivedAt: time.Now()}
	if err := e.inbox.ReceiveMessage(context.Background(), tx, cb, msg); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func (e *inboxEnv) conversation(t *testing.T, openid string) conversation {
	t.Helper()
	var c conversation
	if err := e.db.Get(&c, `SELECT last_message_id, last_message_type, last_message_preview, last_message_at,
		last_user_message_at, session_entered_at, unanswered, last_activity_at
		FROM conversations WHERE app = 'shop' AND openid = $1`, openid); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReceiveMessage(t *testing.T) {
	t.Parallel()
	e := setupInbox(t)
	const user = "o-alice"
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: t0.Unix(), MsgType: "event", Event: "user_enter_tempsession", SessionFrom: "order-42"})
	c := e.conversation(t, user)
	if c.SessionEnteredAt == nil || !c.SessionEnteredAt.Equal(t0) || c.Unanswered != 0 || c.LastMessageID != nil || c.LastUserMessageAt != nil {
		t.Fatalf("after entering the session: %+v", c)
	}

	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: t0.Unix() + 10, MsgType: "text", Content: "hello\x00 there", MsgID: 1001})
	c = e.conversation(t, user)
	if c.Unanswered != 1 || c.LastMessageType == nil || *c.LastMessageType != "text" || *c.LastMessagePreview != "hello\uFFFD there" ||
		!c.LastUserMessageAt.Equal(t0.Add(10*time.Second)) || !c.LastActivityAt.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("after a text: %+v", c)
	}
	lastID := *c.LastMessageID

	// A late retry of an older message counts, but does not become the last one.
	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: t0.Unix() + 5, MsgType: "image", PicURL: "http://p", MediaID: "m1", MsgID: 1000})
	c = e.conversation(t, user)
	if c.Unanswered != 2 || *c.LastMessageID != lastID || !c.LastUserMessageAt.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("after an older image: %+v", c)
	}

	// Unknown types are stored with every field.
	fields := map[string]any{"MsgType": "video_future", "FromUserName": user, "Weird": []any{"x", 1.0}}
	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: t0.Unix() + 20, MsgType: "video_future", MsgID: 1002, Fields: fields})
	c = e.conversation(t, user)
	if c.Unanswered != 3 || *c.LastMessagePreview != "[video_future]" {
		t.Fatalf("after an unknown type: %+v", c)
	}

	var msgs []struct {
		Type          string  `db:"type"`
		Content       string  `db:"content"`
		PlatformMsgID string  `db:"platform_msg_id"`
		Fields        *string `db:"fields"`
		Direction     string  `db:"direction"`
	}
	if err := e.db.Select(&msgs, `SELECT type, content, platform_msg_id, fields::text AS fields, direction FROM messages WHERE app = 'shop' AND openid = $1 ORDER BY created_at, id`, user); err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{"event", "image", "text", "video_future"}
	if len(msgs) != len(wantTypes) {
		t.Fatalf("%d messages, want %d", len(msgs), len(wantTypes))
	}
	for i, m := range msgs {
		if m.Type != wantTypes[i] || m.Direction != "in" {
			t.Fatalf("message %d = %+v, want type %s inbound (in time order)", i, m, wantTypes[i])
		}
	}
	if msgs[2].PlatformMsgID != "1001" || msgs[3].Fields == nil {
		t.Fatalf("text %+v / unknown %+v", msgs[2], msgs[3])
	}
	var kept map[string]any
	if err := json.Unmarshal([]byte(*msgs[3].Fields), &kept); err != nil || kept["Weird"] == nil {
		t.Fatalf("unknown type's fields = %s (%v)", *msgs[3].Fields, err)
	}

	// One message.received per message, with the message in its data.
	list, err := e.evs.List(context.Background(), events.ListParams{Type: events.TypeMessageReceived, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 {
		t.Fatalf("%d message.received events, want 4", len(list))
	}
	var data customerservice.ReceivedData
	for _, ev := range list {
		var d customerservice.ReceivedData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Message.PlatformMsgID == "1001" {
			data = d
		}
	}
	if data.App != "shop" || data.OpenID != user || data.Message.Type != "text" || data.Message.Content != "hello\uFFFD there" || data.Message.ID == "" {
		t.Fatalf("message.received data = %+v", data)
	}
}

// Message times: CreateTime has whole seconds, so a push received within
// its second takes the receipt time; the receipt times that reply windows
// count from are kept; the media users send are registered for download.
func TestReceiveMessageTimesAndMedia(t *testing.T) {
	t.Parallel()
	e := setupInbox(t)
	received := time.Date(2026, 1, 2, 3, 4, 5, 250_000_000, time.UTC)
	e.inbox = customerservice.NewInbox(e.evs, func() time.Time { return received })
	const user = "o-bob"

	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: received.Unix(), MsgType: "image", MediaID: "m-1", MsgID: 1})
	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: received.Unix() - 2, MsgType: "miniprogrampage",
		Title: "t", ThumbMediaID: "thumb-1", MsgID: 2})
	e.receive(t, &webhooks.Message{FromUserName: user, CreateTime: received.Unix() - 3, MsgType: "image", MediaID: "m-1", MsgID: 3})

	var times []time.Time
	if err := e.db.Select(&times, `SELECT created_at FROM messages WHERE openid = $1 ORDER BY platform_msg_id`, user); err != nil {
		t.Fatal(err)
	}
	want := []time.Time{received, received.Truncate(time.Second).Add(-2 * time.Second), received.Truncate(time.Second).Add(-3 * time.Second)}
	for i := range want {
		if !times[i].Equal(want[i]) {
			t.Fatalf("created_at %d = %v, want %v", i, times[i], want[i])
		}
	}

	var conv struct {
		UserAt       time.Time `db:"last_user_message_at"`
		UserReceived time.Time `db:"last_user_message_received_at"`
	}
	if err := e.db.Get(&conv, `SELECT last_user_message_at, last_user_message_received_at FROM conversations WHERE openid = $1`, user); err != nil {
		t.Fatal(err)
	}
	if !conv.UserAt.Equal(received) || !conv.UserReceived.Equal(received) {
		t.Fatalf("conversation times = %+v", conv)
	}

	var media []struct {
		ID      string    `db:"media_id"`
		Origin  string    `db:"origin"`
		Expires time.Time `db:"expires_at"`
		Cached  bool      `db:"cached"`
	}
	if err := e.db.Select(&media, `SELECT media_id, origin, expires_at, data IS NOT NULL AS cached FROM media ORDER BY media_id`); err != nil {
		t.Fatal(err)
	}
	if len(media) != 2 || media[0].ID != "m-1" || media[1].ID != "thumb-1" || media[0].Origin != "inbound" || media[0].Cached ||
		!media[0].Expires.Equal(received.Add(72*time.Hour)) || !media[1].Expires.Equal(want[1].Add(72*time.Hour)) {
		t.Fatalf("media = %+v", media)
	}
}
