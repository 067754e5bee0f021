package auth

import (
	"context"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/httpx"
)

type sessionsByToken map[string]Principal

func (s sessionsByToken) ResolveSession(_ context.Context, token string) (Principal, error) {
	if p, ok := s[token]; ok {
		return p, nil
	}
	return Principal{}, ErrUnauthenticated
}

func TestAuthenticator(t *testing.T) {
	t.Parallel()
	au := New([]config.APIKey{{Name: "backend", Key: "backend-key-0123456789"}}, sessionsByToken{
		"user-token": {UserID: "usr_1", App: "shop"},
	})
	app := httpx.New(httpx.Options{BodyLimit: 1024, Logger: nil})
	who := func(c *fiber.Ctx) error {
		p := FromCtx(c)
		return c.SendString(map[Kind]string{KindOperator: "operator:" + p.KeyName, KindUser: "user:" + p.UserID}[p.Kind])
	}
	app.Get("/op", au.Operator(), who)
	app.Get("/user", au.User(), who)
	app.Get("/any", au.Any(), who)
	for _, tc := range []struct {
		path, auth string
		status     int
		body       string
	}{
		{"/op", "Bearer backend-key-0123456789", 200, "operator:backend"},
		{"/op", "Bearer user-token", 403, ""},
		{"/op", "Bearer backend-key-012345678", 401, ""},
		{"/op", "", 401, ""},
		{"/op", "Basic backend-key-0123456789", 401, ""},
		{"/user", "Bearer user-token", 200, "user:usr_1"},
		{"/user", "Bearer backend-key-0123456789", 403, ""},
		{"/user", "Bearer expired", 401, ""},
		{"/any", "Bearer user-token", 200, "user:usr_1"},
		{"/any", "Bearer backend-key-0123456789", 200, "operator:backend"},
	} {
		t.Run(tc.path+" "+tc.auth, func(t *testing.T) {
			req := httptest.NewRequest("GET", tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := app.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || (tc.body != "" && string(raw) != tc.body) {
				t.Fatalf("= %d %s, want %d %s", resp.StatusCode, raw, tc.status, tc.body)
			}
		})
	}
}
