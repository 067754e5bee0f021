package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/pgtest"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

// call sends a JSON request and decodes the JSON answer into out. It goes
// through testenv.Do, which checks /v1 exchanges against the API
// description.
func call(t *testing.T, method, url, key string, body, out any) int {
	t.Helper()
	var opts []testenv.Opt
	if key != "" {
		opts = append(opts, testenv.Bearer(key), testenv.Header("Idempotency-Key", fmt.Sprintf("cli-%d", time.Now().UnixNano())))
	}
	r := testenv.Do(t, method, url, body, opts...)
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("%s %s: %d %s", method, url, r.Status, r.Body)
		}
	}
	return r.Status
}

// runBinary runs the built minigate and returns its exit code and output.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// TestReconcileSandboxMode is the walkthrough of the docs through the
// built binary: in sandbox mode, pay a few orders (one notification
// dropped); `minigate reconcile` says the bill is not ready (75), then,
// once it is, reports and recovers the dropped payment (3), then matches (0).
func TestReconcileSandboxMode(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	env := []string{"MINIGATE_CONFIG=", "MINIGATE_LISTEN=" + addr, "DATABASE_URL=" + pgtest.NewURL(t)}
	srv := exec.Command(binary, "serve")
	srv.Env = append(os.Environ(), env...)
	var logs syncBuffer
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	base := "http://" + addr
	waitReady(t, base, &logs)

	var code struct{ Code string }
	call(t, "POST", base+"/sandbox/apps/demo-wechat/users/bob/code", "", nil, &code)
	var session struct{ User struct{ ID string } }
	call(t, "POST", base+"/v1/apps/demo-wechat/sessions", "", map[string]string{"code": code.Code}, &session)
	var dropped string
	for i, drop := range []bool{false, false, true} {
		var o struct {
			ID         string `json:"id"`
			OutTradeNo string `json:"out_trade_no"`
		}
		if st := call(t, "POST", base+"/v1/apps/demo-wechat/orders", "sandbox",
			map[string]any{"user_id": session.User.ID, "amount": 100 * (i + 1), "description": "美式咖啡"}, &o); st != 201 {
			t.Fatalf("create order: %d", st)
		}
		call(t, "POST", base+"/sandbox/apps/demo-wechat/orders/"+o.OutTradeNo+"/pay", "",
			map[string]any{"faults": map[string]bool{"drop": drop}}, &map[string]any{})
		if drop {
			dropped = o.OutTradeNo
		}
	}
	today := reconcile.DateOf(time.Now()).String()

	code75, _, stderr := runBinary(t, env, "reconcile", "--app", "demo-wechat", "--date", today)
	if code75 != exitNotReady || !strings.Contains(stderr, "has not generated the bill for "+today+" yet: retry after") {
		t.Fatalf("before the bill is ready: exit %d, stderr %q", code75, stderr)
	}
	call(t, "POST", base+"/sandbox/apps/demo-wechat/bills/"+today+"/ready", "", nil, &map[string]any{})

	exit, out, stderr := runBinary(t, env, "reconcile", "--app", "demo-wechat", "--date", today)
	if exit != exitDiscrepancies {
		t.Fatalf("first run: exit %d\n%s\n%s", exit, out, stderr)
	}
	for _, want := range []string{"Result: 1 discrepancy", "missing_local", dropped, "recovered", "→ paid (source reconcile)", "bill (summary)"} {
		if !strings.Contains(out, want) {
			t.Errorf("first report lacks %q:\n%s", want, out)
		}
	}
	exit, out, stderr = runBinary(t, env, "reconcile", "--app", "demo-wechat", "--date", today, "--format", "json")
	var rep reconcile.Report
	if exit != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Status != reconcile.StatusMatched || rep.Totals.Matched != 3 ||
		rep.Diff == nil || len(rep.Diff.Resolved) != 1 {
		t.Fatalf("second run: exit %d %+v\n%s\n%s", exit, rep, out, stderr)
	}
	if exit, _, stderr := runBinary(t, env, "reconcile", "--app", "demo-wechat", "--format", "yaml"); exit != 2 || !strings.Contains(stderr, "--format") {
		t.Errorf("bad format: exit %d %q", exit, stderr)
	}
	if exit, _, stderr := runBinary(t, env, "reconcile", "--date", today); exit != 2 || !strings.Contains(stderr, "--app is required") {
		t.Errorf("no app: exit %d %q", exit, stderr)
	}
}

// TestReconcileWithConfig runs the command in this process against a
// config file (keys, simulator endpoints, database), as operators do.
func TestReconcileWithConfig(t *testing.T) {
	e := testenv.Start(t, testenv.Spec{Apps: []sandbox.AppSpec{{ID: "shop", Platform: sandbox.Alipay, Pay: true}}})
	// Not parallel: the command reads the environment, whose DATABASE_URL
	// (make test sets it to the server's postgres database) would win over
	// the config's database. Cleared after Start, which finds the server
	// through it.
	t.Setenv("DATABASE_URL", "")
	path, err := sandbox.WriteConfig(t.TempDir(), sandbox.ConfigFile{
		Listen: "127.0.0.1:0", DatabaseURL: e.DBURL, PublicURL: e.URL, APIKey: testenv.APIKey,
		SandboxURL: e.SandboxURL, Apps: e.Config.Apps,
	})
	if err != nil {
		t.Fatal(err)
	}
	app := e.App("shop").ID
	today := reconcile.DateOf(time.Now())
	reconcileCLI := func(format string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"reconcile", "--config", path, "--app", app, "--date", today.String(), "--format", format}, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}
	exitOf := func(err error) int {
		var ee *exitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.code
		}
		return 1
	}

	if _, _, err := reconcileCLI("table"); exitOf(err) != exitNotReady || !strings.Contains(err.Error(), "alipay has not generated the bill") {
		t.Fatalf("not ready: %v", err)
	}
	if err := e.Sandbox.MarkBillReady(app, today.String()); err != nil {
		t.Fatal(err)
	}
	if err := e.Sandbox.DivergeBill(app, today.String(), sandbox.BillDivergence{
		Extra: []sandbox.BillExtraPayment{{OutTradeNo: "NOT_OURS", Amount: 5}},
	}); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := reconcileCLI("csv")
	if exitOf(err) != exitDiscrepancies || !strings.Contains(out, ",missing_local,payment,NOT_OURS,") || stderr != "" {
		t.Fatalf("exit %d (%v)\nstdout %s\nstderr %s", exitOf(err), err, out, stderr)
	}
	var trigger string
	if err := e.DB.Get(&trigger, `SELECT triggered_by FROM reconciliation_runs WHERE app = $1`, app); err != nil || trigger != "cli" {
		t.Errorf("stored run: %q, %v", trigger, err)
	}
	out, _, err = reconcileCLI("json")
	var rep reconcile.Report
	if exitOf(err) != exitDiscrepancies || json.Unmarshal([]byte(out), &rep) != nil || rep.Diff == nil || rep.Diff.Unchanged != 1 {
		t.Errorf("second run, same discrepancy: exit %d %+v", exitOf(err), rep.Diff)
	}
}
