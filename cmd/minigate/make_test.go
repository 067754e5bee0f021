package main

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/pgtest"
)

// TestMakeRunStopsWithItsServer runs `make run` as a person or a supervisor
// does. make serves through exec, so the signal that stops make stops the
// server: SIGTERM to make, or Ctrl-C (SIGINT to the terminal's foreground
// process group). Either way the server shuts down gracefully, nothing is
// left listening and make reports no error. `make run CONFIG=file`
// provisions the database as `make run` does.
func TestMakeRunStopsWithItsServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs make run")
	}
	t.Parallel()
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		group  bool // to make's whole process group, as a terminal does
		config bool
	}{
		{"SIGTERM to make", syscall.SIGTERM, false, false},
		{"Ctrl-C", syscall.SIGINT, true, false},
		{"Ctrl-C with CONFIG", syscall.SIGINT, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := freeAddr(t)
			dbURL, err := url.Parse(pgtest.NewEmptyURL(t))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			args := []string{"-C", repoRoot, "run", "BIN=" + filepath.Join(dir, "minigate"), "DB=" + strings.TrimPrefix(dbURL.Path, "/")}
			env := append(os.Environ(), "DATABASE_URL="+pgtest.ServerURL(), "MINIGATE_CONFIG=", "MINIGATE_LISTEN="+addr)
			if tc.config {
				cfg := filepath.Join(dir, "minigate.yaml")
				doc := "listen: \"" + addr + "\"\ndatabase_url: \"postgres://nowhere.invalid/none\"\nsecret_key: \"" + strings.Repeat("s", 32) + "\"\n"
				if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "CONFIG="+cfg)
			}
			cmd := exec.Command("make", args...)
			cmd.Env = env
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var out syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			waitReadyFor(t, "http://"+addr, &out, 90*time.Second)
			for _, want := range []string{"make run: finding or starting Postgres", "using Postgres at", "make run: starting"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("make run did not say %q:\n%s", want, out.String())
				}
			}
			// The server serves the database make provisioned.
			pool, err := db.Open(context.Background(), dbURL.String())
			if err != nil {
				t.Fatal(err)
			}
			var migrated bool
			err = pool.QueryRow(`SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&migrated)
			pool.Close()
			if err != nil || !migrated {
				t.Fatalf("database %s not migrated (%v): make run served another one", dbURL.Path, err)
			}
			pid := cmd.Process.Pid
			if tc.group {
				pid = -pid
			}
			if err := syscall.Kill(pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("make did not exit after %v:\n%s", tc.sig, out.String())
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Fatalf("something still listens on %s after make exited: the server was orphaned\n%s", addr, out.String())
			}
			text := out.String()
			if strings.Contains(text, "make: ***") || !strings.Contains(text, "shutting down") {
				t.Fatalf("make run did not end cleanly with its server:\n%s", text)
			}
		})
	}
}
