package customerservice_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"mime/multipart"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// csEnv is a minigate instance with one app per platform: "wx" (WeChat),
// "qq" (QQ) and "ali" (Alipay).
type csEnv struct {
	*testenv.Env
	clock *testenv.Clock
}

func setup(t *testing.T, configure ...func(*testenv.Spec)) *csEnv {
	t.Helper()
	c := &testenv.Clock{}
	spec := testenv.Spec{
		Apps: []sandbox.AppSpec{
			{ID: "wx", Platform: sandbox.WeChat},
			{ID: "qq", Platform: sandbox.QQ},
			{ID: "ali", Platform: sandbox.Alipay},
		},
		Now: c.Now,
	}
	for _, f := range configure {
		f(&spec)
	}
	return &csEnv{Env: testenv.Start(t, spec), clock: c}
}

// id is the generated id of app short name app.
func (e *csEnv) id(app string) string { return e.App(app).ID }

// openid is user name's openid in app.
func (e *csEnv) openid(app, name string) string {
	return e.Sandbox.User(e.SandboxApp(app), name).OpenID
}

// push has user name send req to app and requires minigate's success.
func (e *csEnv) push(t *testing.T, app, name string, req sandbox.PushRequest) *sandbox.Report {
	t.Helper()
	rep, err := e.Sandbox.Push(context.Background(), e.SandboxApp(app), name, req)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if d := rep.Deliveries[0]; d.Status != 200 || d.Body != "success" {
		t.Fatalf("push to %s: minigate answered %d %q (%s)", app, d.Status, d.Body, d.Error)
	}
	return rep
}

// write has user name send a text to app.
func (e *csEnv) write(t *testing.T, app, name, text string) {
	t.Helper()
	e.push(t, app, name, sandbox.PushRequest{Type: "text", Content: text})
}

// send posts a JSON send to app.
func (e *csEnv) send(app string, body map[string]any) *testenv.Response {
	e.T.Helper()
	return e.Do("POST", "/v1/apps/"+e.id(app)+"/messages", body, testenv.Operator())
}

// text sends a text to user name of app.
func (e *csEnv) text(app, name, content string) *testenv.Response {
	e.T.Helper()
	return e.send(app, map[string]any{"to": e.openid(app, name), "type": "text", "content": content})
}

// delivered returns what app's platform accepted (errcode 0).
func (e *csEnv) delivered(app string) []sandbox.CustomerMessage {
	var out []sandbox.CustomerMessage
	for _, m := range e.Sandbox.CustomerMessages(e.id(app)) {
		if m.ErrCode == 0 {
			out = append(out, m)
		}
	}
	return out
}

// upload posts a multipart image to app's media route.
func (e *csEnv) upload(app, filename string, data []byte) *testenv.Response {
	e.T.Helper()
	body, ctype := multipartBody(e.T, nil, filename, data)
	return e.Do("POST", "/v1/apps/"+e.id(app)+"/media", body, testenv.Operator(), testenv.Header("Content-Type", ctype))
}

// multipartBody encodes fields and, when data is not nil, a file in the
// "media" field.
func multipartBody(t testing.TB, fields map[string]string, filename string, data []byte) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if data != nil {
		part, err := w.CreateFormFile("media", filename)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := part.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), w.FormDataContentType()
}

// pngImage returns a PNG of size×size pixels of noise drawn from seed
// (it hardly compresses: about 4·size² bytes).
func pngImage(t testing.TB, size int, seed uint64) []byte {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 1))
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for x := range size {
		for y := range size {
			v := rnd.Uint32()
			img.Set(x, y, color.RGBA{R: uint8(v), G: uint8(v >> 8), B: uint8(v >> 16), A: 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// errorDetails decodes the details of an error response.
func errorDetails(t testing.TB, r *testenv.Response) map[string]any {
	t.Helper()
	var b struct {
		Error struct {
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	r.Decode(t, &b)
	return b.Error.Details
}

// message is the wire form of an inbox message in these tests.
type message struct {
	ID           string     `json:"id"`
	OpenID       string     `json:"openid"`
	Direction    string     `json:"direction"`
	Type         string     `json:"type"`
	Content      string     `json:"content"`
	MediaID      string     `json:"media_id"`
	Title        string     `json:"title"`
	URL          string     `json:"url"`
	Status       string     `json:"status"`
	ErrorCode    string     `json:"error_code"`
	SentBy       string     `json:"sent_by"`
	SentAt       *time.Time `json:"sent_at"`
	CreatedAt    time.Time  `json:"created_at"`
	ThumbMediaID string     `json:"thumb_media_id"`
}

type window struct {
	Open         bool       `json:"open"`
	ClosesAt     *time.Time `json:"closes_at"`
	Remaining    int        `json:"remaining"`
	ClosedReason string     `json:"closed_reason"`
}

type inboxConversation struct {
	OpenID      string `json:"openid"`
	LastMessage *struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		Preview   string `json:"preview"`
		Direction string `json:"direction"`
	} `json:"last_message"`
	Unanswered  int     `json:"unanswered"`
	ReplyWindow *window `json:"reply_window"`
}

type messagePage struct {
	Conversation inboxConversation `json:"conversation"`
	Data         []message         `json:"data"`
	NextCursor   string            `json:"next_cursor"`
}

// messages lists the conversation of user name in app (query: extra
// parameters such as "?order=desc").
func (e *csEnv) messages(t *testing.T, app, name, query string) messagePage {
	t.Helper()
	r := e.Do("GET", "/v1/apps/"+e.id(app)+"/conversations/"+e.openid(app, name)+"/messages"+query, nil, testenv.Operator())
	var p messagePage
	r.Expect(t, 200, "list messages", &p)
	return p
}
