package sessions_test

import (
	"context"
	"errors"
	"testing"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
	"github.com/minigate/minigate/sessions"
)

// KeyReader opens the session_key of the latest login (the one the
// platform issued), and wraps adapters.ErrNoSessionKey for users without
// one and when secret_key changed.
func TestKeyReader(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "wx", Platform: sandbox.WeChat}}})
	ctx := context.Background()
	app := e.App("wx").ID
	first := login(t, e, "wx", "ann", false)
	r, err := sessions.NewKeyReader(e.DB, e.Config.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := r.SessionKey(ctx, app, first.User.OpenID)
	if err != nil || key == "" || key != e.Sandbox.SessionKey(app, "ann") {
		t.Fatalf("key after the first login: %v", err)
	}
	login(t, e, "wx", "ann", false)
	if key2, err := r.SessionKey(ctx, app, first.User.OpenID); err != nil || key2 == key || key2 != e.Sandbox.SessionKey(app, "ann") {
		t.Fatalf("key after the second login is not the new one: %v", err)
	}
	if _, err := r.SessionKey(ctx, app, "o-nobody"); !errors.Is(err, adapters.ErrNoSessionKey) {
		t.Fatalf("unknown user: %v", err)
	}
	other, err := sessions.NewKeyReader(e.DB, "another-secret-key-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.SessionKey(ctx, app, first.User.OpenID); !errors.Is(err, adapters.ErrNoSessionKey) {
		t.Fatalf("changed secret_key: %v", err)
	}
}
