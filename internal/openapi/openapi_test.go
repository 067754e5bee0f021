package openapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/openapi"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// TestDocumentIsValidOpenAPI builds the validator the end-to-end tests use:
// the document parses and is valid against the OpenAPI 3.1 schema.
func TestDocumentIsValidOpenAPI(t *testing.T) {
	if _, err := testenv.APIValidator(); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Fatalf("openapi = %q (%v), want 3.1.x", doc.OpenAPI, err)
	}
}

// fullyWired starts an instance with every platform, payments, messages
// and events configured, so that every route a configuration can enable is
// registered.
func fullyWired(t *testing.T) *testenv.Env {
	return testenv.Start(t, testenv.Spec{
		Apps: []sandbox.AppSpec{
			{ID: "wx", Platform: "wechat", Pay: true, UnionScope: "brand"},
			{ID: "qq", Platform: "qq", Pay: true, UnionScope: "brand"},
			{ID: "ali", Platform: "alipay", Pay: true},
		},
		Events: config.Events{URL: "http://127.0.0.1:1/events", Secret: "openapi-test-events-secret-0123456789"},
	})
}

// TestEveryRouteIsDescribed walks the routes a fully wired instance
// registers under /v1 and the document's operations: each must have the
// other.
func TestEveryRouteIsDescribed(t *testing.T) {
	e := fullyWired(t)
	registered := map[string]bool{}
	for _, r := range e.Minigate.HTTP.GetRoutes(true) {
		if r.Method == http.MethodHead || (r.Path != "/v1" && !strings.HasPrefix(r.Path, "/v1/")) {
			continue
		}
		registered[r.Method+" "+openAPIPath(r.Path)] = true
	}
	if len(registered) == 0 {
		t.Fatal("the instance registers no /v1 route: the walk is broken")
	}
	documented := documentedOperations(t)
	for _, op := range sortedKeys(registered) {
		if !documented[op] {
			method, path, _ := strings.Cut(op, " ")
			t.Errorf("%s is registered by the server but not in the API description: add the operation %q under "+
				"paths[%q] in internal/openapi/openapi.json (docs/api.md says how)", op, strings.ToLower(method), path)
		}
	}
	for _, op := range sortedKeys(documented) {
		if !registered[op] {
			t.Errorf("%s is in the API description (internal/openapi/openapi.json) but no fully wired instance "+
				"registers it: remove it from the document, or register the route", op)
		}
	}
}

// TestServed checks GET /openapi.json answers the document unchanged,
// without credentials.
func TestServed(t *testing.T) {
	e := fullyWired(t)
	r := e.Do(http.MethodGet, openapi.Path, nil)
	if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s = %d %s", openapi.Path, r.Status, r.Header.Get("Content-Type"))
	}
	if !bytes.Equal(r.Body, openapi.Document()) {
		t.Fatalf("GET %s does not serve internal/openapi/openapi.json unchanged", openapi.Path)
	}
}

var fiberParam = regexp.MustCompile(`:([A-Za-z0-9_]+)\??`)

// openAPIPath turns a Fiber route path (/v1/orders/:id) into the
// document's form (/v1/orders/{id}), without a trailing slash (a group's
// "/" route is registered as "/v1/events/").
func openAPIPath(p string) string {
	p = fiberParam.ReplaceAllString(p, "{$1}")
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

// documentedOperations returns "METHOD /path" for every operation of the
// document.
func documentedOperations(t *testing.T) map[string]bool {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	ops := map[string]bool{}
	for path, item := range doc.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				ops[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	return ops
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
