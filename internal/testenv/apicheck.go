package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	vderrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/minigate/minigate/internal/openapi"
)

// The API description check. Every /v1 exchange the tests make with
// minigate is validated against internal/openapi/openapi.json: on the
// server side for instances started by Start (a middleware sees every
// request, whoever sends it), on the client side in Do for the other
// servers (a built binary run by a test). A mismatch fails the test.
//
// An exchange matches the document when
//   - its route is in the document (a route the server does not have
//     answers 404 or 405, which is consistent);
//   - its request is valid, or minigate refused it with a 4xx (tests send
//     bad requests on purpose; the server must refuse what the document
//     refuses);
//   - its response is what the document says for the route and status:
//     body, content type, declared headers.
//
// The validator is pb33f/libopenapi-validator (OpenAPI 3.1, JSON Schema
// 2020-12).

var (
	apiOnce sync.Once
	apiVal  validator.Validator
	apiErr  error
)

// APIValidator returns the validator of the API description, built once
// per process; an error means the document itself is broken.
func APIValidator() (validator.Validator, error) {
	apiOnce.Do(func() {
		doc, err := libopenapi.NewDocument(openapi.Document())
		if err != nil {
			apiErr = fmt.Errorf("testenv: the API description does not parse: %w", err)
			return
		}
		v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
		if len(errs) > 0 {
			apiErr = fmt.Errorf("testenv: the API description does not build: %w", errors.Join(errs...))
			return
		}
		if ok, verrs := v.ValidateDocument(); !ok {
			apiErr = fmt.Errorf("testenv: the API description is not valid OpenAPI 3.1:\n%s", describe(verrs))
			return
		}
		apiVal = v
	})
	return apiVal, apiErr
}

// Exchange is one HTTP request with its answer, as CheckAPI reads them.
type Exchange struct {
	Method string
	URL    *url.URL
	Header http.Header
	Body   []byte

	Status     int
	RespHeader http.Header
	RespBody   []byte
}

// CheckAPI returns what is wrong with x according to the API description,
// or "" when it matches (or is not a /v1 exchange).
func CheckAPI(x Exchange) string {
	if !isV1(x.URL.Path) || x.Method == http.MethodHead || x.Method == http.MethodOptions ||
		x.Status == http.StatusSwitchingProtocols {
		return ""
	}
	v, err := APIValidator()
	if err != nil {
		return err.Error()
	}
	header := x.Header.Clone()
	if header.Get("Content-Type") == "" && len(x.Body) > 0 {
		// minigate reads a JSON body whatever its Content-Type says.
		header.Set("Content-Type", "application/json")
	}
	req := &http.Request{
		Method: x.Method, URL: x.URL, Header: header, Host: x.URL.Host,
		Body: io.NopCloser(bytes.NewReader(x.Body)), ContentLength: int64(len(x.Body)),
	}
	what := fmt.Sprintf("%s %s → %d", x.Method, x.URL.RequestURI(), x.Status)
	_, reqErrs := v.ValidateHttpRequestSync(req)
	for _, e := range reqErrs {
		if e.ValidationSubType == "missing" || e.ValidationSubType == "missingOperation" {
			if x.Status == http.StatusNotFound || x.Status == http.StatusMethodNotAllowed {
				return "" // neither the document nor the server has the route
			}
			return fmt.Sprintf("API description: %s: minigate serves this route but internal/openapi/openapi.json "+
				"does not describe it: add %s to its paths (docs/api.md says how)", what, x.Method)
		}
	}
	var problems []string
	if len(reqErrs) > 0 && x.Status < 400 {
		problems = append(problems, "the document refuses this request, yet minigate accepted it "+
			"(the document is stricter than the server, or the server too lax):\n"+describe(reqErrs))
	}
	req.Body = io.NopCloser(bytes.NewReader(x.Body))
	resp := &http.Response{
		StatusCode: x.Status, Header: x.RespHeader, Request: req,
		Body: io.NopCloser(bytes.NewReader(x.RespBody)), ContentLength: int64(len(x.RespBody)),
	}
	if _, respErrs := v.ValidateHttpResponse(req, resp); len(respErrs) > 0 {
		problems = append(problems, "the response is not what the document says:\n"+describe(respErrs))
	}
	if len(problems) == 0 {
		return ""
	}
	return fmt.Sprintf("API description: %s does not match internal/openapi/openapi.json (docs/api.md): %s\n"+
		"  request body: %s\n  response body: %s", what, strings.Join(problems, "\n"), excerpt(x.Body), excerpt(x.RespBody))
}

func isV1(path string) bool { return path == "/v1" || strings.HasPrefix(path, "/v1/") }

// describe lists validation errors, one per line, with the failing
// fields; the fields a closed schema refuses ("false schema") are listed
// on one line.
func describe(errs []*vderrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  - %s", e.Message)
		if e.Reason != "" && e.Reason != e.Message {
			fmt.Fprintf(&b, ": %s", e.Reason)
		}
		b.WriteByte('\n')
		var refused []string
		for _, f := range e.SchemaValidationErrors {
			where := f.FieldPath
			if where == "" {
				where = f.KeywordLocation
			}
			if f.Reason == "false schema" {
				refused = append(refused, where)
				continue
			}
			fmt.Fprintf(&b, "      %s: %s\n", where, f.Reason)
		}
		if len(refused) > 0 {
			slices.Sort(refused)
			fmt.Fprintf(&b, "      not allowed here by the schema: %s\n", strings.Join(refused, ", "))
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func excerpt(b []byte) string {
	const max = 800
	if len(b) > max {
		return fmt.Sprintf("%q… (%d bytes)", b[:max], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// apiCheck is the server-side check of an instance: a middleware that
// sees each /v1 exchange and fails t on a mismatch. After stop, it checks
// nothing (t may be finished).
type apiCheck struct {
	t       testing.TB
	stopped atomic.Bool

	mu       sync.Mutex
	reported map[string]bool // route and status already reported
}

func (a *apiCheck) middleware(c *fiber.Ctx) error {
	if !isV1(c.Path()) {
		return c.Next()
	}
	u, err := url.ParseRequestURI(string(c.Request().RequestURI()))
	if err != nil {
		return c.Next()
	}
	x := Exchange{Method: c.Method(), URL: u, Header: http.Header{}, Body: bytes.Clone(c.Body())}
	u.Scheme, u.Host = "http", string(c.Request().Host())
	c.Request().Header.VisitAll(func(k, v []byte) { x.Header.Add(string(k), string(v)) })
	if err := c.Next(); err != nil {
		// Write the error response now, as httpx's access log does, so
		// that the response checked is the one sent.
		if herr := c.App().ErrorHandler(c, err); herr != nil {
			_ = c.SendStatus(fiber.StatusInternalServerError)
		}
	}
	x.Status = c.Response().StatusCode()
	x.RespHeader = http.Header{}
	c.Response().Header.VisitAll(func(k, v []byte) { x.RespHeader.Add(string(k), string(v)) })
	x.RespBody = bytes.Clone(c.Response().Body())
	if msg := CheckAPI(x); msg != "" && a.first(x.Method+" "+c.Route().Path+" "+strconv.Itoa(x.Status)) && !a.stopped.Load() {
		a.t.Errorf("%s", msg)
	}
	return nil
}

// first reports whether key is reported for the first time: one failure
// per route and status is enough.
func (a *apiCheck) first(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reported[key] {
		return false
	}
	if a.reported == nil {
		a.reported = map[string]bool{}
	}
	a.reported[key] = true
	return true
}

// checkedServers are the base URLs of the instances whose exchanges the
// server-side check sees; Do checks the others'.
var checkedServers sync.Map

func checkedByServer(rawURL string) bool {
	found := false
	checkedServers.Range(func(k, _ any) bool {
		base := k.(string)
		if rawURL == base || strings.HasPrefix(rawURL, base+"/") {
			found = true
			return false
		}
		return true
	})
	return found
}
