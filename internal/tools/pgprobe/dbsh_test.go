package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDBScriptPrivateClusterStartsAndStops runs scripts/db.sh as `make run`
// and `make db-stop` do, on a private cluster in a temporary directory: the
// first call initialises and starts it and prints a URL that accepts
// connections; `db.sh stop` stops it.
func TestDBScriptPrivateClusterStartsAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Postgres cluster")
	}
	if _, err := exec.LookPath("initdb"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) == 0 {
			t.Skip("no PostgreSQL binaries on this machine")
		}
	}
	t.Parallel()
	// Not t.TempDir: the cluster runs as the postgres user when tests run
	// as root, and must be able to reach its directory.
	dir, err := os.MkdirTemp("", "minigate-dbsh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	script := filepath.Join("..", "..", "..", "scripts", "db.sh")
	env := append(os.Environ(), "DATABASE_URL=", "MINIGATE_PG_PRIVATE=1",
		"MINIGATE_PG_DIR="+filepath.Join(dir, "pg"), "MINIGATE_PG_PORT="+strconv.Itoa(port))
	run := func(args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("db.sh %v: %v\n%s", args, err, stderr.String())
		}
		return strings.TrimSpace(string(out)), stderr.String()
	}
	t.Cleanup(func() {
		cmd := exec.Command("bash", script, "stop")
		cmd.Env = env
		_ = cmd.Run()
	})
	url, progress := run("walk")
	if want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/walk?sslmode=disable"; url != want {
		t.Fatalf("URL %q, want %q", url, want)
	}
	for _, want := range []string{"initialising a private cluster", "make db-stop stops it", "using Postgres at 127.0.0.1:" + strconv.Itoa(port) + ", database walk"} {
		if !strings.Contains(progress, want) {
			t.Errorf("progress lacks %q:\n%s", want, progress)
		}
	}
	if err := probe(url, ""); err != nil {
		t.Fatalf("the printed URL does not connect: %v", err)
	}
	_, progress = run("stop")
	if !strings.Contains(progress, "stopping the private cluster") {
		t.Errorf("stop said: %s", progress)
	}
	deadline := time.Now().Add(10 * time.Second)
	for probe(url, "") == nil {
		if time.Now().After(deadline) {
			t.Fatal("the cluster still answers after db.sh stop")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, progress = run("stop"); !strings.Contains(progress, "no private cluster is running") {
		t.Errorf("a second stop said: %s", progress)
	}
}
