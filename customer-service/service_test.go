package customerservice_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// Every message type reaches the platform with the body it documents, for
// each platform with customer service, and lands in the conversation.
func TestSendEachTypeReachesThePlatform(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, app := range []string{"wx", "qq"} {
		t.Run(app, func(t *testing.T) {
			t.Parallel()
			e.write(t, app, "alice", "hello, I need help")
			openid := e.openid(app, "alice")
			up := e.upload(app, "photo.png", pngImage(t, 4, 1))
			if up.Status != 201 {
				t.Fatalf("upload: %d %s", up.Status, up.Body)
			}
			var media struct {
				MediaID   string    `json:"media_id"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			up.Decode(t, &media)
			if media.MediaID == "" || media.ExpiresAt.Before(time.Now().Add(71*time.Hour)) || media.ExpiresAt.After(time.Now().Add(73*time.Hour)) {
				t.Fatalf("upload answered %s, want a media id valid for 3 days", up.Body)
			}

			sends := []struct {
				body map[string]any
				want sandbox.CustomerMessage
			}{
				{map[string]any{"type": "text", "content": "Hi Alice — 你好 <b>&</b>"},
					sandbox.CustomerMessage{MsgType: "text", Text: &sandbox.CustomerText{Content: "Hi Alice — 你好 <b>&</b>"}}},
				{map[string]any{"type": "image", "media_id": media.MediaID},
					sandbox.CustomerMessage{MsgType: "image", Image: &sandbox.CustomerMedia{MediaID: media.MediaID}}},
				{map[string]any{"type": "link", "title": "Your order", "description": "Shipped today",
					"url": "https://shop.example.com/o/1?a=1&b=2", "thumb_url": "https://shop.example.com/t.png"},
					sandbox.CustomerMessage{MsgType: "link", Link: &sandbox.CustomerLink{Title: "Your order", Description: "Shipped today",
						URL: "https://shop.example.com/o/1?a=1&b=2", ThumbURL: "https://shop.example.com/t.png"}}},
				{map[string]any{"type": "miniprogrampage", "title": "Track it", "page_path": "pages/order/index?id=1",
					"thumb_media_id": media.MediaID},
					sandbox.CustomerMessage{MsgType: "miniprogrampage", MiniProgramPage: &sandbox.CustomerMiniProgramPage{
						Title: "Track it", PagePath: "pages/order/index?id=1", ThumbMediaID: media.MediaID}}},
			}
			var ids []string
			for _, s := range sends {
				s.body["to"] = openid
				r := e.send(app, s.body)
				if r.Status != 201 {
					t.Fatalf("send %v: %d %s", s.body["type"], r.Status, r.Body)
				}
				var m message
				r.Decode(t, &m)
				if m.Status != "sent" || m.Direction != "out" || m.SentAt == nil || m.SentBy != "test" || m.Type != s.body["type"] {
					t.Fatalf("send %v answered %s", s.body["type"], r.Body)
				}
				ids = append(ids, m.ID)
			}
			got := e.delivered(app)
			if len(got) != len(sends) {
				t.Fatalf("the platform accepted %d messages, want %d: %+v", len(got), len(sends), got)
			}
			for i, s := range sends {
				g := got[i]
				w := s.want
				w.App, w.ToUser, w.ErrCode, w.At, w.Body = g.App, openid, 0, g.At, g.Body
				if g.App != e.id(app) || !reflect.DeepEqual(g, w) {
					t.Fatalf("platform received %s\nwant %+v", g.Body, w)
				}
				// The platform gets raw characters, not HTML escapes.
				if s.want.MsgType == "text" && !bytes.Contains(g.Body, []byte("<b>&</b>")) {
					t.Fatalf("text body %s escapes HTML", g.Body)
				}
			}

			p := e.messages(t, app, "alice", "")
			if len(p.Data) != 5 || p.Data[0].Direction != "in" || p.Data[0].Content != "hello, I need help" {
				t.Fatalf("conversation = %+v", p.Data)
			}
			for i, id := range ids {
				if m := p.Data[i+1]; m.ID != id || m.Direction != "out" || m.Status != "sent" {
					t.Fatalf("message %d = %+v, want sent %s", i+1, m, id)
				}
			}
			c := p.Conversation
			if c.Unanswered != 0 || c.LastMessage == nil || c.LastMessage.ID != ids[3] || c.LastMessage.Direction != "out" ||
				c.ReplyWindow == nil || !c.ReplyWindow.Open || c.ReplyWindow.Remaining != 1 {
				t.Fatalf("conversation = %+v window %+v", c, c.ReplyWindow)
			}
		})
	}
}

// Alipay has no customer-service API: every route that would call it
// answers 501, while its inbox still lists what users sent.
func TestAlipayIsUnsupported(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.push(t, "ali", "alice", sandbox.PushRequest{Type: "text", Content: "hi"})
	r := e.Do("GET", "/v1/apps/"+e.id("ali")+"/conversations", nil, testenv.Operator())
	var page struct {
		Data []inboxConversation `json:"data"`
	}
	r.Decode(t, &page)
	if r.Status != 200 || len(page.Data) != 1 || page.Data[0].ReplyWindow != nil || page.Data[0].Unanswered != 1 {
		t.Fatalf("alipay inbox: %d %s", r.Status, r.Body)
	}
	openid := page.Data[0].OpenID
	body, ctype := multipartBody(t, nil, "a.png", pngImage(t, 2, 0))
	for _, tc := range []struct {
		name string
		do   func() *testenv.Response
	}{
		{"send", func() *testenv.Response {
			return e.send("ali", map[string]any{"to": openid, "type": "text", "content": "hello"})
		}},
		{"typing", func() *testenv.Response {
			return e.Do("POST", "/v1/apps/"+e.id("ali")+"/conversations/"+openid+"/typing", map[string]any{"typing": true}, testenv.Operator())
		}},
		{"upload", func() *testenv.Response {
			return e.Do("POST", "/v1/apps/"+e.id("ali")+"/media", body, testenv.Operator(), testenv.Header("Content-Type", ctype))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.do()
			if r.Status != 501 || r.ErrorCode() != "unsupported_by_platform" || errorDetails(t, r)["platform"] != "alipay" {
				t.Fatalf("%d %s, want 501 unsupported_by_platform", r.Status, r.Body)
			}
		})
	}
	r = e.Do("GET", "/v1/apps/"+e.id("ali")+"/conversations/"+openid+"/messages", nil, testenv.Operator())
	var msgs messagePage
	r.Decode(t, &msgs)
	if r.Status != 200 || len(msgs.Data) != 1 || msgs.Data[0].Direction != "in" {
		t.Fatalf("alipay conversation: %d %s, want only the user's message", r.Status, r.Body)
	}
}

func TestReplyWindow(t *testing.T) {
	t.Parallel()
	e := setup(t)

	t.Run("a user who never wrote", func(t *testing.T) {
		r := e.text("wx", "nobody", "hello?")
		if r.Status != 409 || r.ErrorCode() != "reply_window_closed" || errorDetails(t, r)["closed_reason"] != "no_user_message" {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	})

	t.Run("the 6th message in 48 hours is refused locally", func(t *testing.T) {
		e.write(t, "wx", "bob", "question")
		for i := range 5 {
			if r := e.text("wx", "bob", fmt.Sprint("answer ", i)); r.Status != 201 {
				t.Fatalf("send %d: %d %s", i, r.Status, r.Body)
			}
		}
		before := len(e.Sandbox.CustomerMessages(e.id("wx")))
		r := e.text("wx", "bob", "one too many")
		if r.Status != 429 || r.ErrorCode() != "reply_quota_exceeded" || errorDetails(t, r)["closed_reason"] != "quota_used" {
			t.Fatalf("6th send: %d %s", r.Status, r.Body)
		}
		if after := len(e.Sandbox.CustomerMessages(e.id("wx"))); after != before {
			t.Fatalf("the refused message reached the platform (%d calls, was %d)", after, before)
		}
		c := e.messages(t, "wx", "bob", "").Conversation
		if c.ReplyWindow.Open || c.ReplyWindow.Remaining != 0 || c.ReplyWindow.ClosedReason != "quota_used" {
			t.Fatalf("window = %+v", c.ReplyWindow)
		}
		// Writing again renews the allowance (to 5, not more).
		e.write(t, "wx", "bob", "one more thing")
		if r := e.text("wx", "bob", "sure"); r.Status != 201 {
			t.Fatalf("after the user wrote again: %d %s", r.Status, r.Body)
		}
		if c := e.messages(t, "wx", "bob", "").Conversation; !c.ReplyWindow.Open || c.ReplyWindow.Remaining != 4 {
			t.Fatalf("window after renewal = %+v", c.ReplyWindow)
		}
	})

	t.Run("entering the session allows 2 within a minute", func(t *testing.T) {
		e.push(t, "qq", "carol", sandbox.PushRequest{Type: "event", Event: "user_enter_tempsession", SessionFrom: "order-7"})
		for i := range 2 {
			if r := e.text("qq", "carol", "welcome"); r.Status != 201 {
				t.Fatalf("send %d: %d %s", i, r.Status, r.Body)
			}
		}
		if r := e.text("qq", "carol", "third"); r.Status != 429 || r.ErrorCode() != "reply_quota_exceeded" {
			t.Fatalf("3rd send: %d %s", r.Status, r.Body)
		}
		if n := len(e.delivered("qq")); n != 2 {
			t.Fatalf("QQ accepted %d messages, want 2", n)
		}
	})

	// Last: it moves minigate's clock.
	t.Run("a message after 48 hours is refused", func(t *testing.T) {
		e.write(t, "wx", "dave", "anyone?")
		wrote := *e.messages(t, "wx", "dave", "").Conversation.ReplyWindow.ClosesAt
		before := len(e.Sandbox.CustomerMessages(e.id("wx")))
		e.clock.Advance(48*time.Hour + time.Second)
		r := e.text("wx", "dave", "sorry for the delay")
		d := errorDetails(t, r)
		if r.Status != 409 || r.ErrorCode() != "reply_window_closed" || d["closed_reason"] != "expired" {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		if closed, err := time.Parse(time.RFC3339Nano, fmt.Sprint(d["closed_at"])); err != nil || !closed.Equal(wrote) {
			t.Fatalf("closed_at = %v, want %v (48 h after the user's message)", d["closed_at"], wrote)
		}
		if after := len(e.Sandbox.CustomerMessages(e.id("wx"))); after != before {
			t.Fatal("the refused message reached the platform")
		}
		if c := e.messages(t, "wx", "dave", "").Conversation; c.ReplyWindow.Open || c.ReplyWindow.ClosedReason != "expired" {
			t.Fatalf("window = %+v", c.ReplyWindow)
		}
	})
}

// The platform stays the authority: its refusals map to the API's errors
// even when minigate's view of the window says open, the message is kept
// as failed with the platform's code, and failures use up no allowance.
func TestPlatformRefusals(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.write(t, "wx", "alice", "hi")
	cases := []struct {
		code   int
		status int
		want   string
	}{
		{45015, 409, "reply_window_closed"},
		{45047, 429, "reply_quota_exceeded"},
		{40003, 400, "invalid_openid"},
		{40007, 400, "invalid_media_id"},
		{48001, 422, "platform_rejected"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			e.Sandbox.FailWeChat(e.id("wx"), sandbox.WeChatError{API: "custom/send", ErrCode: tc.code})
			r := e.text("wx", "alice", "are you there?")
			d := errorDetails(t, r)
			if r.Status != tc.status || r.ErrorCode() != tc.want || d["platform_code"] != fmt.Sprint(tc.code) || d["message_id"] == nil {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.want)
			}
			msgs := e.messages(t, "wx", "alice", "?order=desc&limit=1").Data
			if len(msgs) != 1 || msgs[0].ID != d["message_id"] || msgs[0].Status != "failed" || msgs[0].ErrorCode != fmt.Sprint(tc.code) {
				t.Fatalf("recorded %+v", msgs)
			}
		})
	}
	// None of the refusals used up the window.
	for i := range 5 {
		if r := e.text("wx", "alice", "real answer"); r.Status != 201 {
			t.Fatalf("send %d after the refusals: %d %s", i, r.Status, r.Body)
		}
	}
}

// -1 (busy) is retried with back-off; when it persists the send fails
// with 502 and is recorded as failed.
func TestBusyPlatformIsRetried(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.write(t, "wx", "alice", "hi")
	e.Sandbox.FailWeChat(e.id("wx"), sandbox.WeChatError{API: "custom/send", ErrCode: -1, Times: 2})
	if r := e.text("wx", "alice", "third time lucky"); r.Status != 201 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	calls := e.Sandbox.CustomerMessages(e.id("wx"))
	if len(calls) != 3 || calls[0].ErrCode != -1 || calls[1].ErrCode != -1 || calls[2].ErrCode != 0 {
		t.Fatalf("platform calls = %+v, want two busy answers then success", calls)
	}
	e.Sandbox.FailWeChat(e.id("wx"), sandbox.WeChatError{API: "custom/send", ErrCode: -1, Times: 3})
	start := time.Now()
	r := e.text("wx", "alice", "never")
	if r.Status != 502 || r.ErrorCode() != "platform_busy" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %v; the back-off must be bounded", d)
	}
	if n := len(e.Sandbox.CustomerMessages(e.id("wx"))); n != 6 {
		t.Fatalf("%d platform calls in all, want 3 + 3", n)
	}
	if m := e.messages(t, "wx", "alice", "?order=desc&limit=1").Data[0]; m.Status != "failed" || m.ErrorCode != "-1" {
		t.Fatalf("recorded %+v", m)
	}
}

// A token invalidated at the platform between two sends is refreshed once
// and the send repeated once.
func TestTokenInvalidatedMidFlight(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, app := range []string{"wx", "qq"} {
		e.write(t, app, "alice", "hi")
		if r := e.text(app, "alice", "first"); r.Status != 201 {
			t.Fatalf("%s: %d %s", app, r.Status, r.Body)
		}
	}
	wx := e.id("wx")
	before := e.Sandbox.WeChatTokenStats(wx)
	e.Sandbox.InvalidateWeChatTokens(wx)
	e.Sandbox.InvalidateQQTokens(e.id("qq"))
	for _, app := range []string{"wx", "qq"} {
		if r := e.text(app, "alice", "second"); r.Status != 201 {
			t.Fatalf("%s after invalidation: %d %s", app, r.Status, r.Body)
		}
		if n := len(e.delivered(app)); n != 2 {
			t.Fatalf("%s delivered %d messages, want 2", app, n)
		}
	}
	after := e.Sandbox.WeChatTokenStats(wx)
	if after.Rejected-before.Rejected != 1 || after.ForceRefreshes-before.ForceRefreshes != 1 || after.Issued-before.Issued != 1 {
		t.Fatalf("token stats went from %+v to %+v, want one rejection, one refresh, one new token", before, after)
	}
}

// Upload → send image → a user's image in the inbox → downloads: the
// user's image is fetched from the platform once and then served from
// Postgres; uploaded images are never fetched.
func TestMediaRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t, func(s *testenv.Spec) {
		s.Configure = func(c *config.Config) { c.Limits.MediaBytes = 64 << 10 }
	})
	app := e.id("wx")
	e.write(t, "wx", "alice", "look at this")

	photo := pngImage(t, 8, 7)
	up := e.upload("wx", "photo.png", photo)
	var media struct {
		MediaID     string `json:"media_id"`
		ContentType string `json:"content_type"`
		Size        int    `json:"size"`
	}
	up.Decode(t, &media)
	if up.Status != 201 || media.ContentType != "image/png" || media.Size != len(photo) {
		t.Fatalf("upload: %d %s", up.Status, up.Body)
	}
	if r := e.send("wx", map[string]any{"to": e.openid("wx", "alice"), "type": "image", "media_id": media.MediaID}); r.Status != 201 {
		t.Fatalf("send image: %d %s", r.Status, r.Body)
	}

	// An image sent in one multipart request: uploaded, then sent.
	body, ctype := multipartBody(t, map[string]string{"to": e.openid("wx", "alice"), "type": "image"}, "x.png", pngImage(t, 3, 9))
	r := e.Do("POST", "/v1/apps/"+app+"/messages", body, testenv.Operator(), testenv.Header("Content-Type", ctype))
	var sent message
	r.Decode(t, &sent)
	if r.Status != 201 || sent.MediaID == "" || sent.MediaID == media.MediaID || sent.Type != "image" {
		t.Fatalf("multipart send: %d %s", r.Status, r.Body)
	}
	got := e.delivered("wx")
	if len(got) != 2 || got[0].Image == nil || got[0].Image.MediaID != media.MediaID || got[1].Image == nil || got[1].Image.MediaID != sent.MediaID {
		t.Fatalf("platform received %+v", got)
	}

	// The user sends a picture; the inbox has its media id. (Inbound
	// messages are timed by the platform's CreateTime, in whole seconds, so
	// the picture may sort before the images sent in the same second.)
	e.push(t, "wx", "alice", sandbox.PushRequest{Type: "image"})
	msgs := e.messages(t, "wx", "alice", "?order=desc&limit=3").Data
	i := slices.IndexFunc(msgs, func(m message) bool { return m.Direction == "in" && m.Type == "image" })
	if i < 0 || msgs[i].MediaID == "" {
		t.Fatalf("inbox = %+v", msgs)
	}
	userMedia := msgs[i].MediaID

	get := func(id string) *testenv.Response {
		return e.Do("GET", "/v1/apps/"+app+"/media/"+id, nil, testenv.Operator())
	}
	// Concurrent first downloads share one fetch.
	var wg sync.WaitGroup
	bodies := make([]*testenv.Response, 4)
	for i := range bodies {
		wg.Go(func() { bodies[i] = get(userMedia) })
	}
	wg.Wait()
	for _, b := range append(bodies, get(userMedia)) {
		if b.Status != 200 || b.Header.Get("Content-Type") != "image/png" || !bytes.Equal(b.Body, bodies[0].Body) ||
			!bytes.HasPrefix(b.Body, []byte("\x89PNG")) {
			t.Fatalf("download: %d %s %q", b.Status, b.Header.Get("Content-Type"), b.Body)
		}
	}
	if n := e.Sandbox.MediaFetches(app, userMedia); n != 1 {
		t.Fatalf("the platform served the user's image %d times, want once", n)
	}
	if sum := sha256.Sum256(bodies[0].Body); bodies[0].Header.Get("ETag") != fmt.Sprintf(`"%x"`, sum) {
		t.Fatalf("ETag %s", bodies[0].Header.Get("ETag"))
	}

	// Uploaded images are served from Postgres without any fetch.
	if r := get(media.MediaID); r.Status != 200 || !bytes.Equal(r.Body, photo) {
		t.Fatalf("download uploaded: %d", r.Status)
	}
	if n := e.Sandbox.MediaFetches(app, media.MediaID); n != 0 {
		t.Fatalf("uploaded image fetched %d times", n)
	}

	// Refusals before anything reaches the platform.
	for _, tc := range []struct {
		name   string
		data   []byte
		status int
		code   string
	}{
		{"not an image", []byte("<html><script>alert(1)</script></html>"), 400, "unsupported_media_type"},
		{"too large", bytes.Repeat(pngImage(t, 2, 1), 2000)[:64<<10+1], 413, "media_too_large"},
		{"empty", []byte{}, 400, "invalid_media"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.upload("wx", "f.png", tc.data)
			if r.Status != tc.status || r.ErrorCode() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if r := get("never-seen"); r.Status != 404 || r.ErrorCode() != "media_not_found" {
		t.Fatalf("unknown id: %d %s", r.Status, r.Body)
	}

	// Three days later both ids have expired.
	e.clock.Advance(72*time.Hour + time.Minute)
	for _, id := range []string{userMedia, media.MediaID} {
		if r := get(id); r.Status != 404 || r.ErrorCode() != "media_expired" {
			t.Fatalf("expired %s: %d %s", id, r.Status, r.Body)
		}
	}
}

// Two operators (or eight) racing for the last slot of a window: exactly
// one gets it.
func TestConcurrentSendsAtTheWindowEdge(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.write(t, "wx", "alice", "hi")
	for i := range 4 {
		if r := e.text("wx", "alice", fmt.Sprint("reply ", i)); r.Status != 201 {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	}
	const racers = 8
	statuses := make([]int, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Go(func() {
			<-start
			statuses[i] = e.text("wx", "alice", fmt.Sprint("racer ", i)).Status
		})
	}
	close(start)
	wg.Wait()
	won, lost := 0, 0
	for _, s := range statuses {
		switch s {
		case 201:
			won++
		case 429:
			lost++
		}
	}
	if won != 1 || lost != racers-1 {
		t.Fatalf("statuses %v: want one 201 and %d 429s", statuses, racers-1)
	}
	if n := len(e.delivered("wx")); n != 5 {
		t.Fatalf("the platform accepted %d messages, want 5", n)
	}
	var sent int
	if err := e.DB.Get(&sent, `SELECT count(*) FROM messages WHERE app = $1 AND direction = 'out' AND status = 'sent'`, e.id("wx")); err != nil || sent != 5 {
		t.Fatalf("%d sent messages recorded (%v), want 5", sent, err)
	}
}

func TestInbox(t *testing.T) {
	t.Parallel()
	e := setup(t)
	base := time.Now().Add(-time.Minute).Unix()
	for i, name := range []string{"alice", "bob", "carol"} {
		e.push(t, "wx", name, sandbox.PushRequest{Type: "text", Content: name + " asks", CreateTime: base + int64(10*i)})
	}
	e.push(t, "wx", "bob", sandbox.PushRequest{Type: "text", Content: "bob again", CreateTime: base + 25})
	if r := e.text("wx", "bob", "hello bob"); r.Status != 201 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	list := func(query string) ([]inboxConversation, string) {
		t.Helper()
		r := e.Do("GET", "/v1/apps/"+e.id("wx")+"/conversations"+query, nil, testenv.Operator())
		r.Expect(t, 200, "list", nil)
		var p struct {
			Data       []inboxConversation `json:"data"`
			NextCursor string              `json:"next_cursor"`
		}
		r.Decode(t, &p)
		return p.Data, p.NextCursor
	}
	names := func(cs []inboxConversation) []string {
		var out []string
		for _, c := range cs {
			for _, n := range []string{"alice", "bob", "carol"} {
				if c.OpenID == e.openid("wx", n) {
					out = append(out, n)
				}
			}
		}
		return out
	}

	first, cursor := list("?limit=2")
	second, end := list("?limit=2&cursor=" + cursor)
	if got := names(append(first, second...)); strings.Join(got, ",") != "bob,carol,alice" || cursor == "" || end != "" {
		t.Fatalf("pages = %v (cursor %q, then %q), want bob (just answered), carol, alice", got, cursor, end)
	}
	bob := first[0]
	if bob.Unanswered != 0 || bob.LastMessage.Direction != "out" || bob.LastMessage.Preview != "hello bob" ||
		!bob.ReplyWindow.Open || bob.ReplyWindow.Remaining != 4 {
		t.Fatalf("bob = %+v (%+v)", bob, bob.ReplyWindow)
	}
	if c := first[1]; c.Unanswered != 1 || c.LastMessage.Preview != "carol asks" || c.LastMessage.Direction != "in" || c.ReplyWindow.Remaining != 5 {
		t.Fatalf("carol = %+v", c)
	}
	if got, _ := list("?unanswered=true"); strings.Join(names(got), ",") != "carol,alice" {
		t.Fatalf("unanswered = %v", names(got))
	}

	// Both directions, in order, paged either way.
	asc := e.messages(t, "wx", "bob", "?limit=2")
	rest := e.messages(t, "wx", "bob", "?limit=2&cursor="+asc.NextCursor)
	all := append(asc.Data, rest.Data...)
	if len(all) != 3 || all[0].Content != "bob asks" || all[1].Content != "bob again" || all[2].Content != "hello bob" ||
		all[2].Direction != "out" || rest.NextCursor != "" {
		t.Fatalf("bob's messages = %+v", all)
	}
	desc := e.messages(t, "wx", "bob", "?order=desc")
	if len(desc.Data) != 3 || desc.Data[0].ID != all[2].ID || desc.Data[2].ID != all[0].ID {
		t.Fatalf("newest first = %+v", desc.Data)
	}

	for _, tc := range []struct{ path, code string }{
		{"/conversations?cursor=nonsense", "invalid_cursor"},
		{"/conversations?limit=0", "invalid_limit"},
		{"/conversations?limit=1000", "invalid_limit"},
		{"/conversations?unanswered=maybe", "invalid_unanswered"},
		{"/conversations/" + e.openid("wx", "bob") + "/messages?order=sideways", "invalid_order"},
	} {
		if r := e.Do("GET", "/v1/apps/"+e.id("wx")+tc.path, nil, testenv.Operator()); r.Status != 400 || r.ErrorCode() != tc.code {
			t.Fatalf("%s: %d %s", tc.path, r.Status, r.Body)
		}
	}
	if r := e.Do("GET", "/v1/apps/"+e.id("wx")+"/conversations/"+e.openid("wx", "zed")+"/messages", nil, testenv.Operator()); r.Status != 404 || r.ErrorCode() != "conversation_not_found" {
		t.Fatalf("unknown user: %d %s", r.Status, r.Body)
	}
	if r := e.Do("GET", "/v1/apps/"+e.id("wx")+"/conversations", nil); r.Status != 401 {
		t.Fatalf("without an API key: %d", r.Status)
	}
	if r := e.Do("GET", "/v1/apps/no-such-app/conversations", nil, testenv.Operator()); r.Status != 404 || r.ErrorCode() != "app_not_found" {
		t.Fatalf("unknown app: %d %s", r.Status, r.Body)
	}
}

func TestTyping(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.write(t, "wx", "alice", "hi")
	typing := func(name string, body any) *testenv.Response {
		return e.Do("POST", "/v1/apps/"+e.id("wx")+"/conversations/"+e.openid("wx", name)+"/typing", body, testenv.Operator())
	}
	for _, on := range []bool{true, true, false} {
		if r := typing("alice", map[string]any{"typing": on}); r.Status != 204 {
			t.Fatalf("typing %v: %d %s", on, r.Status, r.Body)
		}
	}
	cmds := e.Sandbox.TypingCommands(e.id("wx"))
	if len(cmds) != 3 || cmds[0].Command != "Typing" || cmds[0].ErrCode != 0 || cmds[1].ErrCode != 45081 ||
		cmds[2].Command != "CancelTyping" || cmds[2].ToUser != e.openid("wx", "alice") {
		t.Fatalf("platform got %+v (the second Typing is already on: success)", cmds)
	}
	e.Sandbox.FailWeChat(e.id("wx"), sandbox.WeChatError{API: "custom/typing", ErrCode: 45080})
	if r := typing("alice", map[string]any{"typing": true}); r.Status != 409 || r.ErrorCode() != "reply_window_closed" {
		t.Fatalf("45080: %d %s", r.Status, r.Body)
	}
	for _, tc := range []struct {
		name, user string
		body       any
		status     int
		code       string
	}{
		{"no conversation", "zed", map[string]any{"typing": true}, 404, "conversation_not_found"},
		{"missing", "alice", map[string]any{}, 400, "invalid_typing"},
		{"not a boolean", "alice", map[string]any{"typing": "yes"}, 400, "invalid_json"},
		{"unknown field", "alice", map[string]any{"typing": true, "for": 10}, 400, "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := typing(tc.user, tc.body); r.Status != tc.status || r.ErrorCode() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
}

func TestSendValidation(t *testing.T) {
	t.Parallel()
	e := setup(t, func(s *testenv.Spec) {
		s.Configure = func(c *config.Config) { c.Limits.BodyBytes = 8 << 10 }
	})
	e.write(t, "wx", "alice", "hi")
	to := e.openid("wx", "alice")
	for _, tc := range []struct {
		name string
		body any
		code string
	}{
		{"no recipient", map[string]any{"type": "text", "content": "x"}, "invalid_to"},
		{"no type", map[string]any{"to": to, "content": "x"}, "invalid_type"},
		{"unknown type", map[string]any{"to": to, "type": "voice", "media_id": "m"}, "invalid_type"},
		{"empty text", map[string]any{"to": to, "type": "text", "content": ""}, "invalid_content"},
		{"text too long", map[string]any{"to": to, "type": "text", "content": strings.Repeat("字", 1400)}, "invalid_content"},
		{"control characters", map[string]any{"to": to, "type": "text", "content": "a\x00b"}, "invalid_content"},
		{"a field of another type", map[string]any{"to": to, "type": "text", "content": "x", "url": "https://x"}, "invalid_url"},
		{"image without media", map[string]any{"to": to, "type": "image"}, "invalid_media_id"},
		{"link without url", map[string]any{"to": to, "type": "link", "title": "t"}, "invalid_url"},
		{"link to ftp", map[string]any{"to": to, "type": "link", "title": "t", "url": "ftp://x/y"}, "invalid_url"},
		{"card without thumbnail", map[string]any{"to": to, "type": "miniprogrampage", "title": "t", "page_path": "p"}, "invalid_thumb_media_id"},
		{"unknown field", map[string]any{"to": to, "type": "text", "content": "x", "msgtype": "text"}, "invalid_json"},
		{"not JSON", "to=alice", "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Do("POST", "/v1/apps/"+e.id("wx")+"/messages", tc.body, testenv.Operator())
			if r.Status != 400 || r.ErrorCode() != tc.code {
				t.Fatalf("%d %s, want 400 %s", r.Status, r.Body, tc.code)
			}
		})
	}
	big := map[string]any{"to": to, "type": "text", "content": strings.Repeat("x", 9<<10)}
	if r := e.Do("POST", "/v1/apps/"+e.id("wx")+"/messages", big, testenv.Operator()); r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("JSON over limits.body_bytes: %d %s", r.Status, r.Body)
	}
	// A multipart image send may be larger than the JSON limit.
	body, ctype := multipartBody(t, map[string]string{"to": to, "type": "image"}, "big.png", pngImage(t, 64, 3))
	if len(body) <= 8<<10 {
		t.Fatalf("test image of %d bytes is not over the JSON limit", len(body))
	}
	if r := e.Do("POST", "/v1/apps/"+e.id("wx")+"/messages", body, testenv.Operator(), testenv.Header("Content-Type", ctype)); r.Status != 201 {
		t.Fatalf("multipart image over the JSON limit: %d %s", r.Status, r.Body)
	}
	body, ctype = multipartBody(t, map[string]string{"to": to, "type": "text", "content": "x"}, "a.png", pngImage(t, 2, 3))
	if r := e.Do("POST", "/v1/apps/"+e.id("wx")+"/messages", body, testenv.Operator(), testenv.Header("Content-Type", ctype)); r.Status != 400 || r.ErrorCode() != "invalid_media" {
		t.Fatalf("file with a text: %d %s", r.Status, r.Body)
	}
	if n := len(e.delivered("wx")); n != 1 {
		t.Fatalf("%d messages reached the platform, want only the valid image", n)
	}
}
