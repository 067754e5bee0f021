package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/pgtest"
)

var binary string

// repoRoot is the repository's root, where the Makefile is.
const repoRoot = "../.."

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "minigate-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "minigate")
	// As a person does: make build stamps the version and commit.
	if out, err := exec.Command("make", "-s", "-C", repoRoot, "build", "BIN="+binary).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "make build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := "database_url: postgres://x@127.0.0.1/db\nsecret_key: " + strings.Repeat("k", 32) + "\n"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // stderr (or stdout for code 0) must contain it, on one line
	}{
		{"version", []string{"version"}, 0, "minigate " + gitOutput(t, "describe", "--tags", "--always", "--dirty") + "\ncommit " + gitOutput(t, "rev-parse", "HEAD") + "\n"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"no command", nil, 2, "no command given"},
		{"missing file", []string{"serve", "--config", filepath.Join(dir, "nope.yaml")}, 1, "config: file: open"},
		{"unknown platform", []string{"serve", "--config", write("p.yaml", base+"apps:\n  - {id: shop, platform: line, app_id: x}\n")}, 1, `config: app "shop": platform: unknown platform "line"`},
		{"missing secret", []string{"migrate", "--config", write("s.yaml", base+"apps:\n  - {id: shop, platform: wechat, app_id: wx1}\n")}, 1, `config: app "shop": app_secret: required`},
		{"duplicate app", []string{"serve", "--config", write("d.yaml", base+"apps:\n  - {id: a, platform: qq, app_id: '1', app_secret: s}\n  - {id: a, platform: qq, app_id: '2', app_secret: s}\n")}, 1, `config: app "a": id: duplicate app id`},
		{"unreadable key", []string{"serve", "--config", write("k.yaml", base+"apps:\n  - {id: ali, platform: alipay, app_id: '2021', private_key_file: /nonexistent.pem, alipay_public_key_file: /x.pem}\n")}, 1, `config: app "ali": private_key_file: open /nonexistent.pem`},
		{"bad flag", []string{"serve", "--nope"}, 2, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = append(os.Environ(), "MINIGATE_CONFIG=")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			out := stderr.String()
			if tc.code == 0 {
				out = stdout.String()
			}
			if code != tc.code || !strings.Contains(out, tc.want) || strings.Contains(out, "minigate dev") {
				t.Fatalf("exit %d (want %d), output %q (want %q)", code, tc.code, out, tc.want)
			}
			if tc.code == 1 && strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
				t.Fatalf("config error is not one line: %q", stderr.String())
			}
		})
	}
}

// gitOutput is what git prints for args in the repository, trimmed.
func gitOutput(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", repoRoot}, args...)...).Output()
	if err != nil {
		t.Skipf("git %v: %v (not a git checkout?)", args, err)
	}
	return strings.TrimSpace(string(out))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady waits up to 30 seconds for the server at base to answer
// /readyz with 200; output is what the test shows if it never does.
func waitReady(t *testing.T, base string, output fmt.Stringer) {
	t.Helper()
	waitReadyFor(t, base, output, 30*time.Second)
}

// waitReadyFor is waitReady with another limit.
func waitReadyFor(t *testing.T, base string, output fmt.Stringer, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %v\n%s", err, output)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeSandboxModeAndGracefulShutdown starts `minigate serve` with no
// config (sandbox mode), checks the banner and readiness, then sends SIGTERM
// while a slow request is in flight: the request must complete and the
// process exit 0.
func TestServeSandboxModeAndGracefulShutdown(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(os.Environ(), "MINIGATE_CONFIG=", "MINIGATE_LISTEN="+addr, "DATABASE_URL="+pgtest.NewURL(t))
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	base := "http://" + addr
	waitReady(t, base, &stderr)
	for _, want := range []string{"SANDBOX MODE", "demo-wechat", "demo-qq", "demo-alipay", "API key        sandbox", "curl"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, stdout.String())
		}
	}

	// A request the simulator holds for 1.5 s before answering.
	done := make(chan *http.Response, 1)
	errs := make(chan error, 1)
	go func() {
		resp, err := http.Post(base+"/sandbox/apps/demo-wechat/orders/no-such-order/pay", "application/json",
			strings.NewReader(`{"faults":{"delay_ms":1500}}`))
		if err != nil {
			errs <- err
			return
		}
		done <- resp
	}()
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-done:
		resp.Body.Close()
		if resp.StatusCode == 0 {
			t.Fatal("no status")
		}
	case err := <-errs:
		t.Fatalf("in-flight request failed during shutdown: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request never finished")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("no shutdown log: %s", stderr.String())
	}
}

// TestStandaloneSandboxWritesAUsableConfig runs `minigate sandbox
// --write-config` and feeds the written file to `minigate migrate`.
func TestStandaloneSandboxWritesAUsableConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sb := exec.Command(binary, "sandbox", "--listen", freeAddr(t), "--write-config", dir)
	var out syncBuffer
	sb.Stdout, sb.Stderr = &out, &out
	if err := sb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Process.Kill(); _ = sb.Wait() })
	cfg := filepath.Join(dir, "minigate.yaml")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "sandbox listening") {
		if time.Now().After(deadline) {
			t.Fatalf("simulator did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	mig := exec.Command(binary, "migrate", "--config", cfg)
	mig.Env = append(os.Environ(), "DATABASE_URL="+pgtest.NewURL(t))
	if res, err := mig.CombinedOutput(); err != nil || !strings.Contains(string(res), "schema is current") {
		t.Fatalf("migrate with written config: %v\n%s", err, res)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
