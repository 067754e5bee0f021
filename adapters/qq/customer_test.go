package qq_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"testing"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/adapters/wechat"
	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

func (e *env) customerService(t *testing.T) (*wechat.CustomerProtocol, *testenv.FetcherTokens) {
	t.Helper()
	ts := &testenv.FetcherTokens{F: qq.NewTokenFetcher(e.cfg, e.opts)}
	opts := e.opts
	opts.Tokens = ts
	cs, err := qq.NewCustomerService(e.cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cs, ts
}

// userWrites has the simulated user write to the app (the push itself is
// dropped: there is no minigate here) and returns their openid.
func (e *env) userWrites(t *testing.T, name string) string {
	t.Helper()
	if _, err := e.sim.Push(context.Background(), e.sb, name, sandbox.PushRequest{Type: "text", Content: "hi",
		Faults: sandbox.Faults{Drop: true}}); err != nil {
		t.Fatal(err)
	}
	return e.sim.User(e.sb, name).OpenID
}

func TestCustomerService(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	cs, ts := e.customerService(t)
	ctx := context.Background()
	alice := e.userWrites(t, "alice")

	var img bytes.Buffer
	if err := png.Encode(&img, image.NewGray(image.Rect(0, 0, 2, 2))); err != nil {
		t.Fatal(err)
	}
	up, err := cs.UploadImage(ctx, customerservice.Image{Filename: "a.png", ContentType: "image/png", Data: img.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []customerservice.Outbound{
		{To: alice, Type: customerservice.TypeText, Content: "hello"},
		{To: alice, Type: customerservice.TypeImage, MediaID: up.MediaID},
		{To: alice, Type: customerservice.TypeLink, Title: "t", URL: "https://q.example/"},
		{To: alice, Type: customerservice.TypeMiniProgramPage, Title: "t", PagePath: "pages/a", ThumbMediaID: up.MediaID},
	}
	for _, m := range msgs {
		if err := cs.SendMessage(ctx, m); err != nil {
			t.Fatalf("%s: %v", m.Type, err)
		}
	}
	got := e.sim.CustomerMessages(e.sb.ID)
	if len(got) != 4 || got[0].Text.Content != "hello" || got[1].Image.MediaID != up.MediaID ||
		got[2].Link.URL != "https://q.example/" || got[3].MiniProgramPage.PagePath != "pages/a" {
		t.Fatalf("QQ received %+v", got)
	}
	if m, err := cs.FetchMedia(ctx, up.MediaID); err != nil || !bytes.Equal(m.Data, img.Bytes()) {
		t.Fatalf("fetch: %v", err)
	}
	if err := cs.SetTyping(ctx, alice, true); err != nil {
		t.Fatal(err)
	}

	// QQ's invalid-token answer (40014) refreshes the token once.
	e.sim.InvalidateQQTokens(e.sb.ID)
	if err := cs.SendMessage(ctx, msgs[0]); err != nil || ts.Refreshes() != 1 {
		t.Fatalf("after invalidation: %v (%d refreshes)", err, ts.Refreshes())
	}

	cases := []struct {
		name   string
		err    error
		reason adapters.Reason
		code   string
	}{
		{"quota", cs.SendMessage(ctx, msgs[0]), adapters.ReasonQuotaExceeded, "45047"},
		{"never wrote", cs.SendMessage(ctx, customerservice.Outbound{To: e.sim.User(e.sb, "ghost").OpenID, Type: "text", Content: "x"}),
			adapters.ReasonWindowClosed, "45015"},
		{"unknown media", func() error { _, err := cs.FetchMedia(ctx, "nope"); return err }(), adapters.ReasonNotFound, "40007"},
	}
	for _, tc := range cases {
		pe := wantPlatformError(t, tc.err, qq.PlatformQQ, tc.reason, tc.code)
		if pe.API == "" {
			t.Fatalf("%s: no API in %+v", tc.name, pe)
		}
	}
}
