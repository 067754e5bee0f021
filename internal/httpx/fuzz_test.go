package httpx

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/minigate/minigate/internal/apperr"
)

// bindTarget is shaped like the API's request bodies: strings, integers,
// booleans, a nested object, a list and a free-form map.
type bindTarget struct {
	Code     string         `json:"code"`
	Amount   int64          `json:"amount"`
	Prefer   bool           `json:"prefer_unionid"`
	Faults   *bindNested    `json:"faults,omitempty"`
	Tags     []string       `json:"tags"`
	Metadata map[string]any `json:"metadata"`
}

type bindNested struct {
	Duplicates int  `json:"duplicates"`
	Drop       bool `json:"drop"`
}

// FuzzBindJSON: BindJSON never panics; what it accepts is one valid JSON
// value with nothing after it and no unknown field; everything else is a
// 400 invalid_json.
func FuzzBindJSON(f *testing.F) {
	for _, seed := range []string{
		`{"code":"abc","amount":100}`,
		`{"code":"abc","amount":100,"extra":1}`,
		`{"amount":1.5}`,
		`{"amount":9223372036854775808}`,
		`{"faults":{"duplicates":3,"drop":true},"tags":["a"],"metadata":{"k":[1,{"x":null}]}}`,
		`{"code":"a"}{"code":"b"}`,
		`{"code":"a"} trailing`,
		`   `,
		`null`,
		`[1,2]`,
		"{\"code\":\"\xff\xfe\"}",
		`{"code":"\u0000"}`,
		`{"code":"a","code":"b"}`,
	} {
		f.Add([]byte(seed))
	}
	app := fiber.New()
	f.Fuzz(func(t *testing.T, body []byte) {
		fctx := &fasthttp.RequestCtx{}
		fctx.Request.SetBody(body)
		c := app.AcquireCtx(fctx)
		defer app.ReleaseCtx(c)
		var v bindTarget
		err := BindJSON(c, &v)
		if err != nil {
			ae, ok := apperr.As(err)
			if !ok || ae.Kind != apperr.Invalid || ae.Code != "invalid_json" {
				t.Fatalf("refusal is not 400 invalid_json: %v", err)
			}
			return
		}
		trimmed := bytes.TrimSpace(body)
		if !json.Valid(trimmed) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		// What was accepted decodes the same way with the standard library.
		var again bindTarget
		if err := json.Unmarshal(trimmed, &again); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
	})
}
