package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// csSim is a simulator with one WeChat or QQ app on a settable clock and
// a valid access token for it.
type csSim struct {
	*wechatSim
	prefix string // /wechat or /qq
	token  string
}

func newCSSim(t *testing.T, platform string) *csSim {
	t.Helper()
	w := newWeChatSim(t, AppSpec{ID: platform + "-cs", Platform: platform})
	c := &csSim{wechatSim: w, prefix: "/" + platform}
	c.newToken(t)
	return c
}

func (c *csSim) newToken(t *testing.T) {
	t.Helper()
	if c.app.Platform == WeChat {
		c.token = c.stableToken(t, false)
		return
	}
	q := url.Values{"grant_type": {"client_credential"}, "appid": {c.app.AppID}, "secret": {c.app.AppSecret}}
	c.token = c.call(t, http.MethodGet, "/qq/api/getToken?"+q.Encode(), nil)["access_token"].(string)
}

// advance moves the clock, and gets a token valid at the new time.
func (c *csSim) advance(t *testing.T, d time.Duration) {
	t.Helper()
	c.clock.Advance(d)
	c.newToken(t)
}

// userDoes has user name send a message (or enter the session); the push
// is dropped, as there is no minigate here.
func (c *csSim) userDoes(t *testing.T, name string, req PushRequest) string {
	t.Helper()
	req.Faults.Drop = true
	if _, err := c.s.Push(context.Background(), c.app, name, req); err != nil {
		t.Fatal(err)
	}
	return c.s.User(c.app, name).OpenID
}

func (c *csSim) post(t *testing.T, api string, body any) int {
	t.Helper()
	return errcode(c.call(t, http.MethodPost, c.prefix+"/cgi-bin/"+api+"?access_token="+c.token, body))
}

func (c *csSim) text(t *testing.T, openid string) int {
	t.Helper()
	return c.post(t, "message/custom/send", map[string]any{"touser": openid, "msgtype": "text", "text": map[string]any{"content": "hi"}})
}

func (c *csSim) upload(t *testing.T, typ string, data []byte) map[string]any {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	part, _ := mw.CreateFormFile("media", "f")
	_, _ = part.Write(data)
	_ = mw.Close()
	req := httptest.NewRequest(http.MethodPost, c.prefix+"/cgi-bin/media/upload?access_token="+c.token+"&type="+typ, &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := c.h.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("upload: %q", raw)
	}
	return out
}

// The reply windows, enforced for WeChat and (modelled on it) QQ apps.
func TestCustomerServiceWindows(t *testing.T) {
	t.Parallel()
	for _, platform := range []string{WeChat, QQ} {
		t.Run(platform, func(t *testing.T) {
			t.Parallel()
			c := newCSSim(t, platform)
			if got := c.text(t, c.s.User(c.app, "ghost").OpenID); got != 45015 {
				t.Fatalf("never wrote: %d", got)
			}
			if got := c.text(t, "not-an-openid"); got != 40003 {
				t.Fatalf("bad openid: %d", got)
			}

			alice := c.userDoes(t, "alice", PushRequest{Type: "text", Content: "hi"})
			for i := range 5 {
				if got := c.text(t, alice); got != 0 {
					t.Fatalf("message %d: %d", i, got)
				}
			}
			if got := c.text(t, alice); got != 45047 {
				t.Fatalf("6th message: %d, want 45047", got)
			}
			// Entering the session adds an allowance of 2 for a minute,
			// not on top of anything.
			c.clock.Advance(time.Second)
			c.userDoes(t, "alice", PushRequest{Type: "event"})
			for i := range 2 {
				if got := c.text(t, alice); got != 0 {
					t.Fatalf("after entering, message %d: %d", i, got)
				}
			}
			if got := c.text(t, alice); got != 45047 {
				t.Fatalf("3rd after entering: %d", got)
			}
			c.advance(t, 47*time.Hour)
			if got := c.text(t, alice); got != 45047 {
				t.Fatalf("47 h later, quota still used: %d", got)
			}
			c.userDoes(t, "alice", PushRequest{Type: "text", Content: "again"})
			if got := c.text(t, alice); got != 0 {
				t.Fatalf("after writing again: %d", got)
			}
			c.advance(t, 48*time.Hour)
			if got := c.text(t, alice); got != 45015 {
				t.Fatalf("48 h after the last message: %d, want 45015", got)
			}

			bob := c.userDoes(t, "bob", PushRequest{Type: "event"})
			c.clock.Advance(59 * time.Second)
			if got := c.text(t, bob); got != 0 {
				t.Fatalf("59 s after entering: %d", got)
			}
			c.clock.Advance(time.Second)
			if got := c.text(t, bob); got != 45015 {
				t.Fatalf("a minute after entering: %d, want 45015", got)
			}

			var accepted int
			for _, m := range c.s.CustomerMessages(c.app.ID) {
				if m.ErrCode == 0 {
					accepted++
				}
			}
			if accepted != 9 {
				t.Fatalf("%d accepted messages recorded, want 9", accepted)
			}
		})
	}
}

func TestCustomerServiceBodies(t *testing.T) {
	t.Parallel()
	c := newCSSim(t, WeChat)
	alice := c.userDoes(t, "alice", PushRequest{Type: "text", Content: "hi"})
	up := c.upload(t, "image", samplePNG())
	media, _ := up["media_id"].(string)
	if media == "" || up["type"] != "image" {
		t.Fatalf("upload = %v", up)
	}
	cases := []struct {
		name string
		body any
		want int
	}{
		{"text", map[string]any{"touser": alice, "msgtype": "text", "text": map[string]any{"content": "hi"}}, 0},
		{"empty text", map[string]any{"touser": alice, "msgtype": "text", "text": map[string]any{"content": ""}}, 47001},
		{"image", map[string]any{"touser": alice, "msgtype": "image", "image": map[string]any{"media_id": media}}, 0},
		{"unknown image", map[string]any{"touser": alice, "msgtype": "image", "image": map[string]any{"media_id": "x"}}, 40007},
		{"link without url", map[string]any{"touser": alice, "msgtype": "link", "link": map[string]any{"title": "t"}}, 47001},
		{"card", map[string]any{"touser": alice, "msgtype": "miniprogrampage",
			"miniprogrampage": map[string]any{"title": "t", "pagepath": "p", "thumb_media_id": media}}, 0},
		{"card without thumbnail", map[string]any{"touser": alice, "msgtype": "miniprogrampage",
			"miniprogrampage": map[string]any{"title": "t", "pagepath": "p"}}, 47001},
		{"voice", map[string]any{"touser": alice, "msgtype": "voice"}, 40008},
		{"not JSON", "{", 47001},
	}
	for _, tc := range cases {
		if got := c.post(t, "message/custom/send", tc.body); got != tc.want {
			t.Fatalf("%s: errcode %d, want %d", tc.name, got, tc.want)
		}
	}
	got := c.s.CustomerMessages(c.app.ID)
	if len(got) != len(cases) || got[2].Image == nil || got[2].Image.MediaID != media || got[5].MiniProgramPage.ThumbMediaID != media {
		t.Fatalf("recorded %+v", got)
	}
	if got := errcode(c.call(t, http.MethodPost, "/wechat/cgi-bin/message/custom/send?access_token=stale",
		map[string]any{"touser": alice, "msgtype": "text", "text": map[string]any{"content": "x"}})); got != 40001 {
		t.Fatalf("bad token: %d", got)
	}
	if n := len(c.s.CustomerMessages(c.app.ID)); n != len(cases) {
		t.Fatal("a call with a bad token was recorded")
	}

	for _, tc := range []struct {
		typ  string
		data []byte
		want int
	}{
		{"voice", samplePNG(), 40004},
		{"image", []byte("<html></html>"), 40005},
		{"image", bytes.Repeat([]byte{0x89}, csMaxImage+1), 40009},
	} {
		if got := errcode(c.upload(t, tc.typ, tc.data)); got != tc.want {
			t.Fatalf("upload %s of %d bytes: %d, want %d", tc.typ, len(tc.data), got, tc.want)
		}
	}
	// Downloads are counted per media id.
	for range 2 {
		req := httptest.NewRequest(http.MethodGet, "/wechat/cgi-bin/media/get?access_token="+c.token+"&media_id="+media, nil)
		resp, err := c.h.Test(req, -1)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("media/get: %v", err)
		}
		resp.Body.Close()
	}
	if n := c.s.MediaFetches(c.app.ID, media); n != 2 {
		t.Fatalf("%d fetches counted, want 2", n)
	}
	ctl := c.call(t, http.MethodGet, "/apps/"+c.app.ID+"/customer-messages", nil)
	if msgs, _ := ctl["messages"].([]any); len(msgs) != len(cases) || ctl["media_fetches"].(map[string]any)[media] != 2.0 {
		t.Fatalf("control route = %v", ctl)
	}
}

func TestCustomerServiceTyping(t *testing.T) {
	t.Parallel()
	c := newCSSim(t, QQ)
	typing := func(openid, cmd string) int {
		return c.post(t, "message/custom/typing", map[string]any{"touser": openid, "command": cmd})
	}
	alice := c.userDoes(t, "alice", PushRequest{Type: "text", Content: "hi"})
	steps := []struct {
		wait time.Duration
		cmd  string
		want int
	}{
		{0, "Typing", 0},
		{5 * time.Second, "Typing", 45081}, // still showing
		{0, "CancelTyping", 0},
		{0, "Typing", 0},
		{0, "Type", 45072},
		{10 * time.Second, "Typing", 45081}, // 15 s after the message; shown 10 s ago
		{10 * time.Second, "Typing", 0},     // 25 s: the indicator (15 s) is gone
		{10 * time.Second, "Typing", 45080}, // 35 s: no exchange in the last 30 s
	}
	for i, s := range steps {
		c.clock.Advance(s.wait)
		if got := typing(alice, s.cmd); got != s.want {
			t.Fatalf("step %d (%s): %d, want %d", i, s.cmd, got, s.want)
		}
	}
	// A reply is an exchange: typing is allowed again, and a message
	// cancels the indicator.
	if got := c.text(t, alice); got != 0 {
		t.Fatal(got)
	}
	if got := typing(alice, "Typing"); got != 0 {
		t.Fatalf("after a reply: %d", got)
	}
	if got := c.text(t, alice); got != 0 {
		t.Fatal(got)
	}
	if got := typing(alice, "Typing"); got != 0 {
		t.Fatalf("after a message cancelled typing: %d", got)
	}
	if got := typing(c.s.User(c.app, "ghost").OpenID, "Typing"); got != 45015 {
		t.Fatalf("never wrote: %d", got)
	}
	if cmds := c.s.TypingCommands(c.app.ID); len(cmds) != len(steps)+3 || cmds[1].ErrCode != 45081 {
		t.Fatalf("typing recorded %+v", cmds)
	}
	// QQ's token errcodes.
	if got := errcode(c.call(t, http.MethodPost, "/qq/cgi-bin/message/custom/typing?access_token=nope",
		map[string]any{"touser": alice, "command": "Typing"})); got != 40014 {
		t.Fatalf("unknown QQ token: %d", got)
	}
	c.s.InvalidateQQTokens(c.app.ID)
	if got := typing(alice, "CancelTyping"); got != 40014 {
		t.Fatalf("invalidated QQ token: %d", got)
	}
}
