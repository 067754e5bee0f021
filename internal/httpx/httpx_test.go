package httpx

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
)

func testApp(t *testing.T) (*fiber.App, *strings.Builder) {
	t.Helper()
	var logs strings.Builder
	app := New(Options{BodyLimit: 64, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	app.Post("/bind", func(c *fiber.Ctx) error {
		var v struct {
			Amount int64 `json:"amount"`
		}
		if err := BindJSON(c, &v); err != nil {
			return err
		}
		return c.JSON(v)
	})
	app.Get("/apperr", func(c *fiber.Ctx) error {
		e := apperr.New(apperr.RateLimited, "rate_limited", "slow down").WithDetail("field", "x")
		e.RetryAfter = 3 * time.Second
		return e
	})
	app.Get("/plain", func(c *fiber.Ctx) error { return errors.New("secret internal detail") })
	app.Get("/panic", func(c *fiber.Ctx) error { panic("boom") })
	return app, &logs
}

func TestErrorShapes(t *testing.T) {
	t.Parallel()
	app, logs := testApp(t)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"bind ok", "POST", "/bind", `{"amount": 5}`, 200, ""},
		{"unknown field", "POST", "/bind", `{"ammount": 5}`, 400, "invalid_json"},
		{"trailing data", "POST", "/bind", `{"amount": 5} {}`, 400, "invalid_json"},
		{"empty body", "POST", "/bind", ``, 400, "invalid_json"},
		{"float amount", "POST", "/bind", `{"amount": 1.5}`, 400, "invalid_json"},
		{"stray closing brace", "POST", "/bind", `{"amount": 5}}`, 400, "invalid_json"},
		{"stray closing bracket", "POST", "/bind", `{"amount": 5} ]`, 400, "invalid_json"},
		{"null", "POST", "/bind", `null`, 400, "invalid_json"},
		{"array", "POST", "/bind", `[{"amount": 5}]`, 400, "invalid_json"},
		{"apperr", "GET", "/apperr", "", 429, "rate_limited"},
		{"plain error", "GET", "/plain", "", 500, "internal_error"},
		{"panic", "GET", "/panic", "", 500, "internal_error"},
		{"no route", "GET", "/missing", "", 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := app.Test(req, -1)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id header")
			}
			if tc.code == "" {
				return
			}
			var body ErrorBody
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("not the error shape: %s", raw)
			}
			if body.Error.Code != tc.code || body.Error.Message == "" || body.Error.RequestID == "" {
				t.Fatalf("error = %+v, want code %s", body.Error, tc.code)
			}
			if strings.Contains(string(raw), "secret internal detail") {
				t.Fatal("internal error text leaked to the client")
			}
		})
	}
	t.Run("body too large", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go app.Listener(ln) //nolint:errcheck // stopped by Shutdown
		defer app.Shutdown()
		resp, err := http.Post("http://"+ln.Addr().String()+"/bind", "application/json", strings.NewReader(`{"amount": 5, "pad": "`+strings.Repeat("x", 100)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 413 || !strings.Contains(string(raw), `"body_too_large"`) {
			t.Fatalf("oversize body = %d %s", resp.StatusCode, raw)
		}
	})
	t.Run("retry-after", func(t *testing.T) {
		resp, _ := app.Test(httptest.NewRequest("GET", "/apperr", nil))
		if resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("Retry-After = %q", resp.Header.Get("Retry-After"))
		}
	})
	if !strings.Contains(logs.String(), `"route":"/bind"`) || !strings.Contains(logs.String(), `"route":"unmatched"`) {
		t.Errorf("access log lacks route patterns: %s", logs.String())
	}
}

// TestOneLogLinePerRequest: every request is logged once, at a level that
// says whose problem it is — an expected 501 or a client error is INFO, a
// platform failure WARN, minigate's own failure ERROR with its cause — and
// requests under a tagged prefix carry their component.
func TestOneLogLinePerRequest(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	app := New(Options{BodyLimit: 64, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Components: map[string]string{"/sandbox/": "simulator"}})
	app.Get("/unsupported", func(c *fiber.Ctx) error {
		return apperr.Wrap(errors.New("no such API"), apperr.Unsupported, "unsupported_by_platform", "alipay does not support it")
	})
	app.Get("/notfound", func(c *fiber.Ctx) error { return apperr.New(apperr.NotFound, "order_not_found", "no such order") })
	app.Get("/upstream", func(c *fiber.Ctx) error {
		return apperr.Wrap(errors.New("dial tcp: refused"), apperr.Unavailable, "platform_unavailable", "the platform is unreachable")
	})
	app.Get("/plain", func(c *fiber.Ctx) error { return errors.New("disk on fire") })
	app.Get("/panic", func(c *fiber.Ctx) error { panic("boom") })
	app.Get("/sandbox/wechat/token", func(c *fiber.Ctx) error { return c.SendString("ok") })
	for _, tc := range []struct {
		path, level, cause, component string
	}{
		{"/unsupported", "INFO", "", ""},
		{"/notfound", "INFO", "", ""},
		{"/missing", "INFO", "", ""},
		{"/upstream", "WARN", "platform_unavailable: dial tcp: refused", ""},
		{"/plain", "ERROR", "disk on fire", ""},
		{"/panic", "ERROR", "boom", ""},
		{"/sandbox/wechat/token", "INFO", "", "simulator"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			logs.Reset()
			resp, err := app.Test(httptest.NewRequest("GET", tc.path, nil), -1)
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("X-Request-Id")
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if m["request_id"] == id {
					lines = append(lines, m)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("%d log lines for the request, want 1:\n%s", len(lines), logs.String())
			}
			l := lines[0]
			cause, _ := l["err"].(string)
			component, _ := l["component"].(string)
			if l["level"] != tc.level || cause != tc.cause || component != tc.component {
				t.Fatalf("line = %v; want level %s, err %q, component %q", l, tc.level, tc.cause, tc.component)
			}
		})
	}
}
