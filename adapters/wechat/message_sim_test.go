package wechat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/silenceper/wechat/v2/util"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/webhooks"
)

// messageReceiver stands in for minigate's message callback: it opens each
// push with the verifier, answers Ack or 403 with the reject reason, and
// cross-checks encrypted pushes with silenceper's decrypt.
type messageReceiver struct {
	t        *testing.T
	verifier webhooks.MessageVerifier
	app      *sandbox.App

	mu        sync.Mutex
	messages  []*webhooks.Message
	decrypted [][]byte // what silenceper decrypted, per encrypted push
}

func (rcv *messageReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := webhooks.Request{Method: r.Method, Query: r.URL.Query(), Header: r.Header, Body: body}
	msg, err := rcv.verifier.OpenMessage(req)
	if err != nil {
		ve, ok := webhooks.AsVerifyError(err)
		if !ok {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		http.Error(w, string(ve.Reason), http.StatusForbidden)
		return
	}
	var plain []byte
	if req.Query.Get("encrypt_type") == "aes" {
		var envelope struct {
			Encrypt string `json:"Encrypt" xml:"Encrypt"`
		}
		if bytes.HasPrefix(body, []byte("{")) {
			_ = json.Unmarshal(body, &envelope)
		} else {
			envelope.Encrypt = between(string(body), "<Encrypt><![CDATA[", "]]></Encrypt>")
		}
		_, raw, serr := util.DecryptMsg(rcv.app.AppID, envelope.Encrypt, rcv.app.Messages.EncodingAESKey)
		if serr != nil {
			http.Error(w, "silenceper cannot decrypt: "+serr.Error(), http.StatusInternalServerError)
			return
		}
		plain = raw
	}
	rcv.mu.Lock()
	rcv.messages = append(rcv.messages, msg)
	rcv.decrypted = append(rcv.decrypted, plain)
	rcv.mu.Unlock()
	ack := rcv.verifier.Ack()
	w.Header().Set("Content-Type", ack.ContentType)
	w.WriteHeader(ack.Status)
	_, _ = w.Write(ack.Body)
}

func between(s, from, to string) string {
	_, after, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, to)
	return v
}

func (rcv *messageReceiver) last() (*webhooks.Message, []byte) {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.messages) == 0 {
		rcv.t.Fatal("no message received")
	}
	return rcv.messages[len(rcv.messages)-1], rcv.decrypted[len(rcv.decrypted)-1]
}

func (rcv *messageReceiver) count() int {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return len(rcv.messages)
}

// receiverApp registers an app whose callbacks go to a receiver using the
// platform's verifier (NewMessageVerifier for WeChat, the exported codec
// for QQ, as adapters/qq uses it).
func receiverApp(t *testing.T, spec sandbox.AppSpec) (*sandbox.Sandbox, *sandbox.App, *messageReceiver) {
	t.Helper()
	rcv := &messageReceiver{t: t}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	spec.PublicURL = srv.URL
	sim, sb, cfg, opts := simApp(t, spec)
	var err error
	if spec.Platform == sandbox.QQ {
		rcv.verifier, err = wechat.NewMessageCodec(cfg.AppID, cfg.Messages.Token, cfg.Messages.EncodingAESKey, opts.CallbackWindow, nil)
	} else {
		rcv.verifier, err = wechat.NewMessageVerifier(cfg, opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	rcv.app = sb
	return sim, sb, rcv
}

func TestMessagesFromSimulator(t *testing.T) {
	t.Parallel()
	for _, platform := range []string{sandbox.WeChat, sandbox.QQ} {
		for _, mode := range []string{sandbox.PushModePlaintext, sandbox.PushModeCompatible, sandbox.PushModeSafe} {
			for _, format := range []string{sandbox.PushFormatXML, sandbox.PushFormatJSON} {
				t.Run(platform+"/"+mode+"/"+format, func(t *testing.T) {
					t.Parallel()
					sim, sb, rcv := receiverApp(t, sandbox.AppSpec{Platform: platform, MessageMode: mode, MessageFormat: format})
					openid := sim.User(sb, "alice").OpenID
					pushes := []struct {
						req   sandbox.PushRequest
						check func(m *webhooks.Message, details map[string]any) bool
					}{
						{sandbox.PushRequest{Type: "text", Content: "你好 <b>&amp; ]]>"}, func(m *webhooks.Message, d map[string]any) bool {
							return m.MsgType == "text" && m.Content == "你好 <b>&amp; ]]>" && m.MsgID == d["msg_id"]
						}},
						{sandbox.PushRequest{Type: "image"}, func(m *webhooks.Message, d map[string]any) bool {
							return m.MsgType == "image" && m.MediaID == d["media_id"] && strings.HasSuffix(m.PicURL, m.MediaID) && m.MsgID != 0
						}},
						{sandbox.PushRequest{Type: "miniprogrampage", Title: "Shoes", PagePath: "pages/item?id=1"}, func(m *webhooks.Message, _ map[string]any) bool {
							return m.Title == "Shoes" && m.PagePath == "pages/item?id=1" && m.AppID == sb.AppID && m.ThumbMediaID != "" && m.ThumbURL != ""
						}},
						{sandbox.PushRequest{Type: "event", SessionFrom: "order-9"}, func(m *webhooks.Message, _ map[string]any) bool {
							return m.MsgType == "event" && m.Event == "user_enter_tempsession" && m.SessionFrom == "order-9" && m.MsgID == 0
						}},
						{sandbox.PushRequest{Type: "event", Event: "wxa_media_check"}, func(m *webhooks.Message, _ map[string]any) bool {
							return m.Event == "wxa_media_check"
						}},
						{sandbox.PushRequest{Type: "location", Content: "somewhere"}, func(m *webhooks.Message, _ map[string]any) bool {
							return m.MsgType == "location" && m.Fields["Content"] == "somewhere"
						}},
					}
					for _, p := range pushes {
						rep, err := sim.Push(context.Background(), sb, "alice", p.req)
						if err != nil {
							t.Fatal(err)
						}
						if len(rep.Deliveries) != 1 || rep.Deliveries[0].Status != http.StatusOK || rep.Deliveries[0].Body != "success" {
							t.Fatalf("%s: deliveries %+v", p.req.Type, rep.Deliveries)
						}
						details := rep.Details
						m, silenceperPlain := rcv.last()
						if m.FromUserName != openid || m.ToUserName != sb.OriginalID || m.CreateTime == 0 || !p.check(m, details) {
							t.Fatalf("%s: message %+v (details %v)", p.req.Type, m, details)
						}
						if (mode == sandbox.PushModePlaintext) != (silenceperPlain == nil) {
							t.Fatalf("%s: silenceper cross-check did not run", p.req.Type)
						}
					}
				})
			}
		}
	}
}

func TestForgedMessagesFromSimulator(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mode   string
		format string
		faults sandbox.Faults
		reason webhooks.RejectReason
	}{
		{"bad signature", sandbox.PushModeSafe, sandbox.PushFormatXML, sandbox.Faults{BadSignature: true}, webhooks.RejectBadSignature},
		{"bad signature, plaintext", sandbox.PushModePlaintext, sandbox.PushFormatJSON, sandbox.Faults{BadSignature: true}, webhooks.RejectBadSignature},
		{"bad msg_signature", sandbox.PushModeSafe, sandbox.PushFormatJSON, sandbox.Faults{BadMsgSignature: true}, webhooks.RejectBadMsgSignature},
		{"bad msg_signature, compatible", sandbox.PushModeCompatible, sandbox.PushFormatXML, sandbox.Faults{BadMsgSignature: true}, webhooks.RejectBadMsgSignature},
		{"stale timestamp", sandbox.PushModeSafe, sandbox.PushFormatXML, sandbox.Faults{StaleTimestamp: true}, webhooks.RejectStaleTimestamp},
		{"foreign app id", sandbox.PushModeSafe, sandbox.PushFormatXML, sandbox.Faults{ForeignAppID: true}, webhooks.RejectForeignApp},
		{"foreign app id, compatible JSON", sandbox.PushModeCompatible, sandbox.PushFormatJSON, sandbox.Faults{ForeignAppID: true}, webhooks.RejectForeignApp},
		{"tampered ciphertext", sandbox.PushModeSafe, sandbox.PushFormatJSON, sandbox.Faults{TamperCiphertext: true}, webhooks.RejectBadCiphertext},
		{"truncated XML", sandbox.PushModePlaintext, sandbox.PushFormatXML, sandbox.Faults{Truncate: true}, webhooks.RejectMalformed},
		{"truncated JSON", sandbox.PushModeSafe, sandbox.PushFormatJSON, sandbox.Faults{Truncate: true}, webhooks.RejectMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, sb, rcv := receiverApp(t, sandbox.AppSpec{MessageMode: tt.mode, MessageFormat: tt.format})
			rep, err := sim.Push(context.Background(), sb, "alice", sandbox.PushRequest{Type: "text", Content: "x", Faults: tt.faults})
			if err != nil {
				t.Fatal(err)
			}
			d := rep.Deliveries[0]
			if d.Status != http.StatusForbidden || strings.TrimSpace(d.Body) != string(tt.reason) {
				t.Fatalf("delivery %+v, want 403 %s", d, tt.reason)
			}
			if rcv.count() != 0 {
				t.Fatal("a forged push was accepted")
			}
		})
	}

	t.Run("duplicates are each verified", func(t *testing.T) {
		t.Parallel()
		sim, sb, rcv := receiverApp(t, sandbox.AppSpec{MessageMode: sandbox.PushModeSafe})
		rep, err := sim.Push(context.Background(), sb, "alice", sandbox.PushRequest{Type: "text", Content: "x", Faults: sandbox.Faults{Duplicates: 5}})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range rep.Deliveries {
			if d.Status != http.StatusOK {
				t.Fatalf("delivery %+v", d)
			}
		}
		if rcv.count() != 6 {
			t.Fatalf("%d messages, want 6", rcv.count())
		}
	})
}

func TestNewMessageVerifierNeedsAToken(t *testing.T) {
	t.Parallel()
	if _, err := wechat.NewMessageVerifier(&config.App{ID: "x", AppID: "wx"}, adapters.Options{}); err == nil {
		t.Fatal("accepted an app without messages.token")
	}
}
