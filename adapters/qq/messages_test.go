package qq_test

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

// pushSink stands in for minigate's message callback; it keeps the last
// push and answers "success".
type pushSink struct {
	*httptest.Server
	mu   sync.Mutex
	last webhooks.Request
	path string
}

func newPushSink(t *testing.T) *pushSink {
	t.Helper()
	s := &pushSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.last = webhooks.Request{Method: r.Method, Query: r.URL.Query(), Header: r.Header.Clone(), Body: b, ReceivedAt: time.Now()}
		s.path = r.URL.Path
		s.mu.Unlock()
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *pushSink) request() (webhooks.Request, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.path
}

// TestMessagePushes has the simulator push a QQ user's messages in every
// mode and format and opens each with the QQ verifier.
func TestMessagePushes(t *testing.T) {
	t.Parallel()
	sim, base := testenv.Simulator(t)
	sink := newPushSink(t)
	ctx := context.Background()
	var (
		v  webhooks.MessageVerifier
		sb *sandbox.App
	)
	for _, mode := range []string{sandbox.PushModePlaintext, sandbox.PushModeCompatible, sandbox.PushModeSafe} {
		// Each mode is its own console setting: a plaintext-mode app has no
		// EncodingAESKey (and an app with one refuses plaintext pushes).
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		var cfg *config.App
		var err error
		sb, cfg, err = sandbox.NewAppPair(sandbox.AppSpec{ID: "qqmsg-" + hex.EncodeToString(b), Platform: sandbox.QQ,
			PublicURL: sink.URL, MessageMode: mode, Key: testenv.Key})
		if err != nil {
			t.Fatal(err)
		}
		sim.AddApp(sb)
		if v, err = qq.NewMessageVerifier(cfg, adapters.Options{Endpoints: sandbox.Endpoints(base), CallbackWindow: 5 * time.Minute}); err != nil {
			t.Fatal(err)
		}
		user := sim.User(sb, "dora")
		for _, format := range []string{sandbox.PushFormatXML, sandbox.PushFormatJSON} {
			content := "你好 " + mode + " " + format
			rep, err := sim.Push(ctx, sb, "dora", sandbox.PushRequest{Type: "text", Content: content, Mode: mode, Format: format})
			if err != nil {
				t.Fatalf("%s/%s: %v", mode, format, err)
			}
			if len(rep.Deliveries) != 1 || rep.Deliveries[0].Status != http.StatusOK {
				t.Fatalf("%s/%s: deliveries %+v", mode, format, rep.Deliveries)
			}
			req, path := sink.request()
			if path != "/callbacks/"+cfg.ID+"/messages" {
				t.Fatalf("pushed to %s", path)
			}
			m, err := v.OpenMessage(req)
			if err != nil {
				t.Fatalf("%s/%s: %v", mode, format, err)
			}
			if m.MsgType != "text" || m.Content != content || m.FromUserName != user.OpenID || m.ToUserName != sb.OriginalID {
				t.Fatalf("%s/%s: message %+v", mode, format, m)
			}
		}
	}
	if ack := v.Ack(); string(ack.Body) != "success" {
		t.Fatalf("ack %q", ack.Body)
	}

	refused := map[string]sandbox.Faults{
		"bad signature":     {BadSignature: true},
		"bad msg_signature": {BadMsgSignature: true},
		"foreign appid":     {ForeignAppID: true},
		"stale timestamp":   {StaleTimestamp: true},
	}
	for name, f := range refused {
		if _, err := sim.Push(ctx, sb, "dora", sandbox.PushRequest{Type: "text", Content: "x", Mode: sandbox.PushModeSafe, Faults: f}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		req, _ := sink.request()
		if _, err := v.OpenMessage(req); err == nil {
			t.Fatalf("%s: accepted", name)
		} else if _, ok := webhooks.AsVerifyError(err); !ok {
			t.Fatalf("%s: %v is not a VerifyError", name, err)
		}
	}
}

// TestMessageURLVerification checks the GET handshake with a signature
// computed here: sha1 of the sorted token, timestamp and nonce.
func TestMessageURLVerification(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	v, err := qq.NewMessageVerifier(e.cfg, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	ts, nonce := strconv.FormatInt(time.Now().Unix(), 10), "1514711492"
	parts := []string{e.cfg.Messages.Token, ts, nonce}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	q := url.Values{"signature": {hex.EncodeToString(sum[:])}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {"echo-123"}}
	echo, err := v.VerifyURL(webhooks.Request{Method: http.MethodGet, Query: q})
	if err != nil || echo != "echo-123" {
		t.Fatalf("echo %q, %v", echo, err)
	}
	q.Set("signature", strings.Repeat("0", 40))
	if _, err := v.VerifyURL(webhooks.Request{Method: http.MethodGet, Query: q}); err == nil {
		t.Fatal("a forged signature was echoed")
	}
}

func TestMessageVerifierNeedsToken(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	cfg := *e.cfg
	cfg.Messages.Token = ""
	if _, err := qq.NewMessageVerifier(&cfg, e.opts); err == nil || !strings.Contains(err.Error(), cfg.ID) {
		t.Fatalf("err = %v, want one naming the app", err)
	}
}
