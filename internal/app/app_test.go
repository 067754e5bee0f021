package app_test

import (
	"strings"
	"testing"

	"github.com/minigate/minigate/internal/testenv"
)

func TestOperationsRoutes(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{})
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/healthz", 200, `"ok"`},
		{"/readyz", 200, `"ready"`},
		{"/nope", 404, `"not_found"`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := e.Do("GET", tc.path, nil)
			if r.Status != tc.status || !strings.Contains(string(r.Body), tc.want) {
				t.Fatalf("GET %s = %d %s", tc.path, r.Status, r.Body)
			}
		})
	}
	t.Run("/metrics", func(t *testing.T) {
		r := e.Do("GET", "/metrics", nil)
		if r.Status != 200 || !strings.Contains(string(r.Body), `minigate_http_requests_total{method="GET",route="/healthz",status="200"}`) {
			t.Fatalf("metrics missing request counter:\n%s", r.Body)
		}
	})
}

func TestReadyzFailsOnOldSchema(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Spec{})
	if _, err := e.DB.Exec(`DELETE FROM goose_db_version WHERE version_id = (SELECT max(version_id) FROM goose_db_version)`); err != nil {
		t.Fatal(err)
	}
	r := e.Do("GET", "/readyz", nil)
	if r.Status != 503 || r.ErrorCode() != "schema_behind" {
		t.Fatalf("readyz on old schema = %d %s", r.Status, r.Body)
	}
}
