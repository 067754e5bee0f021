package wechat_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// csSetup registers an app with the simulator and returns its
// customer-service adapter and token source.
func csSetup(t *testing.T) (*sandbox.Sandbox, *sandbox.App, *wechat.CustomerService, *testenv.FetcherTokens) {
	t.Helper()
	sim, sb, cfg, opts := simApp(t, sandbox.AppSpec{})
	tokens := &testenv.FetcherTokens{F: wechat.NewTokenFetcher(cfg, opts)}
	opts.Tokens = tokens
	cs, err := wechat.NewCustomerService(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sim, sb, cs, tokens
}

// userWrites has the simulated user send a message; the push itself is
// dropped (no minigate here), but the platform counts it.
func userWrites(t *testing.T, sim *sandbox.Sandbox, sb *sandbox.App, name string) string {
	t.Helper()
	if _, err := sim.Push(context.Background(), sb, name, sandbox.PushRequest{Type: "text", Content: "hi",
		Faults: sandbox.Faults{Drop: true}}); err != nil {
		t.Fatal(err)
	}
	return sim.User(sb, name).OpenID
}

func testPNG(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 3, 3))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The hand-written protocol (used by QQ) sends exactly what silenceper
// sends, for every message type.
func TestCustomerSendMatchesSilenceper(t *testing.T) {
	t.Parallel()
	sim, sb, cs, _ := csSetup(t)
	ctx := context.Background()
	up, err := cs.UploadImage(ctx, customerservice.Image{Filename: "a.png", ContentType: "image/png", Data: testPNG(t)})
	if err != nil {
		t.Fatal(err)
	}
	messages := []customerservice.Outbound{
		{Type: customerservice.TypeText, Content: "héllo <b>&</b>"},
		{Type: customerservice.TypeImage, MediaID: up.MediaID},
		{Type: customerservice.TypeLink, Title: "t", Description: "d", URL: "https://x.example/?a=1&b=2", ThumbURL: "https://x.example/t.png"},
		{Type: customerservice.TypeMiniProgramPage, Title: "t", PagePath: "pages/a?b=1", ThumbMediaID: up.MediaID},
	}
	for i, m := range messages {
		// Two users, so neither runs out of the 5 messages a window allows.
		m.To = userWrites(t, sim, sb, "silenceper")
		if err := cs.SendMessage(ctx, m); err != nil {
			t.Fatalf("silenceper %s: %v", m.Type, err)
		}
		m.To = userWrites(t, sim, sb, "by-hand")
		if err := cs.CustomerProtocol.SendMessage(ctx, m); err != nil {
			t.Fatalf("by hand %s: %v", m.Type, err)
		}
		got := sim.CustomerMessages(sb.ID)
		a, b := got[2*i], got[2*i+1]
		if a.ErrCode != 0 || b.ErrCode != 0 || a.MsgType != m.Type {
			t.Fatalf("%s: answers %d, %d", m.Type, a.ErrCode, b.ErrCode)
		}
		a.ToUser, a.At, a.Body = b.ToUser, b.At, b.Body
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: silenceper sent %s, by hand %s", m.Type, got[2*i].Body, got[2*i+1].Body)
		}
		if strings.Contains(string(b.Body), `\u003c`) {
			t.Fatalf("by hand escapes HTML: %s", b.Body)
		}
	}
}

func TestCustomerSendErrors(t *testing.T) {
	t.Parallel()
	sim, sb, cs, tokens := csSetup(t)
	ctx := context.Background()
	alice := userWrites(t, sim, sb, "alice")
	text := func(to string) customerservice.Outbound {
		return customerservice.Outbound{To: to, Type: customerservice.TypeText, Content: "hello"}
	}
	cases := []struct {
		name   string
		prep   func()
		msg    customerservice.Outbound
		reason adapters.Reason
		code   string
	}{
		{"bad openid", nil, text("not-an-openid"), adapters.ReasonInvalidOpenID, "40003"},
		{"never wrote", nil, text(sim.User(sb, "ghost").OpenID), adapters.ReasonWindowClosed, "45015"},
		{"unknown media", nil, customerservice.Outbound{To: alice, Type: customerservice.TypeImage, MediaID: "nope"},
			adapters.ReasonNotFound, "40007"},
		{"busy", func() { sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "custom/send", ErrCode: -1}) }, text(alice),
			adapters.ReasonBusy, "-1"},
		{"unauthorized", func() { sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "custom/send", ErrCode: 48001}) }, text(alice),
			adapters.ReasonRejected, "48001"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prep != nil {
				tc.prep()
			}
			wantPlatformError(t, cs.SendMessage(ctx, tc.msg), tc.reason, tc.code)
		})
	}
	for i := range 5 {
		if err := cs.SendMessage(ctx, text(alice)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	wantPlatformError(t, cs.SendMessage(ctx, text(alice)), adapters.ReasonQuotaExceeded, "45047")
	if tokens.Refreshes() != 0 {
		t.Fatalf("%d token refreshes, want none", tokens.Refreshes())
	}
	if err := cs.SendMessage(ctx, customerservice.Outbound{To: alice, Type: "voice"}); err == nil || adapters.HasReason(err, adapters.ReasonRejected) {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestCustomerServiceTokenRefresh(t *testing.T) {
	t.Parallel()
	sim, sb, cs, tokens := csSetup(t)
	ctx := context.Background()
	alice := userWrites(t, sim, sb, "alice")
	msg := customerservice.Outbound{To: alice, Type: customerservice.TypeText, Content: "one"}
	if err := cs.SendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	for i, call := range []func() error{
		func() error { return cs.SendMessage(ctx, msg) },
		func() error { return cs.SetTyping(ctx, alice, false) },
		func() error {
			_, err := cs.UploadImage(ctx, customerservice.Image{Filename: "a.png", ContentType: "image/png", Data: testPNG(t)})
			return err
		},
	} {
		sim.InvalidateWeChatTokens(sb.ID)
		if err := call(); err != nil {
			t.Fatalf("call %d after invalidation: %v", i, err)
		}
		if tokens.Refreshes() != i+1 {
			t.Fatalf("call %d: %d refreshes in all, want %d", i, tokens.Refreshes(), i+1)
		}
	}

	// A token the platform keeps refusing: one refresh, one retry, then
	// the error.
	_, _, cfg, opts := simApp(t, sandbox.AppSpec{})
	stuck := &stuckTokens{token: "sbx_never_valid"}
	opts.Tokens = stuck
	bad, err := wechat.NewCustomerService(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	err = bad.SendMessage(ctx, msg)
	wantPlatformError(t, err, adapters.ReasonInvalidToken, "40001")
	if stuck.refreshes != 1 || strings.Contains(err.Error(), stuck.token) {
		t.Fatalf("%d refreshes (want 1); error %v", stuck.refreshes, err)
	}
	// A token source that fails: nothing is sent.
	before := len(sim.CustomerMessages(cfg.ID))
	failing := &stuckTokens{err: errors.New("database down")}
	opts.Tokens = failing
	broken, err := wechat.NewCustomerService(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := broken.SendMessage(ctx, msg); err == nil || !strings.Contains(err.Error(), "database down") {
		t.Fatalf("err = %v", err)
	}
	if len(sim.CustomerMessages(cfg.ID)) != before {
		t.Fatal("a message went out without a token")
	}
}

func TestCustomerTypingAndMedia(t *testing.T) {
	t.Parallel()
	sim, sb, cs, _ := csSetup(t)
	ctx := context.Background()
	alice := userWrites(t, sim, sb, "alice")

	for i, on := range []bool{true, true, false} {
		if err := cs.SetTyping(ctx, alice, on); err != nil {
			t.Fatalf("typing %d: %v", i, err)
		}
	}
	if cmds := sim.TypingCommands(sb.ID); len(cmds) != 3 || cmds[1].ErrCode != 45081 || cmds[2].Command != "CancelTyping" {
		t.Fatalf("typing commands = %+v", cmds)
	}
	wantPlatformError(t, cs.SetTyping(ctx, sim.User(sb, "ghost").OpenID, true), adapters.ReasonWindowClosed, "45015")
	sim.FailWeChat(sb.ID, sandbox.WeChatError{API: "custom/typing", ErrCode: 45080})
	wantPlatformError(t, cs.SetTyping(ctx, alice, true), adapters.ReasonWindowClosed, "45080")
	wantPlatformError(t, cs.SetTyping(ctx, "nope", true), adapters.ReasonInvalidOpenID, "40003")

	img := testPNG(t)
	up, err := cs.UploadImage(ctx, customerservice.Image{Filename: "a.png", ContentType: "image/png", Data: img})
	if err != nil || up.MediaID == "" || up.ExpiresAt.Sub(time.Now().Add(72*time.Hour)).Abs() > time.Minute {
		t.Fatalf("upload = %+v, %v", up, err)
	}
	m, err := cs.FetchMedia(ctx, up.MediaID)
	if err != nil || !bytes.Equal(m.Data, img) || m.ContentType != "image/png" {
		t.Fatalf("fetch = %s %d bytes, %v", m.ContentType, len(m.Data), err)
	}
	if n := sim.MediaFetches(sb.ID, up.MediaID); n != 1 {
		t.Fatalf("%d fetches", n)
	}
	wantPlatformError(t, func() error { _, err := cs.FetchMedia(ctx, "nope"); return err }(), adapters.ReasonNotFound, "40007")
	_, err = cs.UploadImage(ctx, customerservice.Image{Filename: "a.png", ContentType: "image/png", Data: []byte("not a picture")})
	wantPlatformError(t, err, adapters.ReasonInvalidRequest, "40005")
}

// Transport errors never carry the access token (it is in the query).
func TestCustomerTransportErrorsHideTheToken(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(nil)
	base := srv.URL
	srv.Close()
	p := &wechat.CustomerProtocol{Platform: "wechat", Base: base, HTTP: srv.Client(), Reason: wechat.CustomerReason,
		Tokens: &stuckTokens{token: "sbx_secret_token_value"}}
	for name, call := range map[string]func() error{
		"send": func() error {
			return p.SendMessage(context.Background(), customerservice.Outbound{To: "o", Type: "text", Content: "x"})
		},
		"typing": func() error { return p.SetTyping(context.Background(), "o", true) },
		"fetch":  func() error { _, err := p.FetchMedia(context.Background(), "m"); return err },
	} {
		err := call()
		if !adapters.HasReason(err, adapters.ReasonUnreachable) || strings.Contains(err.Error(), "sbx_secret_token_value") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
