package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the Postgres driver
	"gopkg.in/yaml.v3"

	"github.com/minigate/minigate/internal/app"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/sandbox"
)

// apiKey is the operator key the benchmarked instance accepts.
const apiKey = "bench-operator-key-0123456789abcdef"

// eventsSecret signs the events minigate delivers to the bench's receiver.
const eventsSecret = "bench-events-secret-0123456789abcdef"

// Machine describes where a run happened.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryMiB int64  `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Postgres  string `json:"postgres"`
	// LoadStart and LoadEnd are /proc/loadavg's 1, 5 and 15-minute load
	// averages when the run began and ended.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// probeMachine reads the CPU model, memory and kernel from /proc.
func probeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAverage()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
				m.MemoryMiB = kb / 1024
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	return m
}

// loadAverage returns the 1, 5 and 15-minute load averages.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// load1 is the 1-minute load average, or -1 when unknown.
func load1() float64 {
	f := strings.Fields(loadAverage())
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// database is a fresh database created for one run on a server.
type database struct {
	server *sql.DB
	name   string
	url    string
}

// createDatabase creates an empty database named name on the server at
// serverURL and returns it with its URL.
func createDatabase(ctx context.Context, serverURL, name string) (*database, error) {
	server, err := sql.Open("postgres", serverURL)
	if err != nil {
		return nil, fmt.Errorf("bench: open server: %w", err)
	}
	if _, err := server.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
		server.Close()
		return nil, fmt.Errorf("bench: drop old database: %w", err)
	}
	if _, err := server.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		server.Close()
		return nil, fmt.Errorf("bench: create database: %w", err)
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		server.Close()
		return nil, fmt.Errorf("bench: database URL: %w", err)
	}
	u.Path = "/" + name
	return &database{server: server, name: name, url: u.String()}, nil
}

// drop removes the database, closing whatever connections remain.
func (d *database) drop() error {
	defer d.server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.server.ExecContext(ctx, `DROP DATABASE IF EXISTS `+d.name+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("bench: drop database %s: %w", d.name, err)
	}
	return nil
}

// postgresVersion is the server's version string, shortened.
func postgresVersion(ctx context.Context, d *database) string {
	var v string
	if err := d.server.QueryRowContext(ctx, `SHOW server_version`).Scan(&v); err != nil {
		return "unknown"
	}
	var fsync, syncCommit string
	_ = d.server.QueryRowContext(ctx, `SHOW fsync`).Scan(&fsync)
	_ = d.server.QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&syncCommit)
	return fmt.Sprintf("PostgreSQL %s (fsync=%s, synchronous_commit=%s)", v, fsync, syncCommit)
}

// openMigrated opens url as minigate does and applies minigate's schema.
func openMigrated(ctx context.Context, url string) (*sqlx.DB, error) {
	pool, err := db.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if _, err := db.Migrate(ctx, pool.DB); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago (for a process that must know its address before it listens).
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// simulator is the platform simulator, served by the bench process.
type simulator struct {
	sb  *sandbox.Sandbox
	url string // ends in /sandbox
	srv *fiber.App
}

func startSimulator() (*simulator, error) {
	sb := sandbox.New(sandbox.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 20 << 20})
	srv.Mount("/sandbox", sb.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: simulator: %w", err)
	}
	go func() { _ = srv.Listener(ln) }()
	return &simulator{sb: sb, url: "http://" + ln.Addr().String() + "/sandbox", srv: srv}, nil
}

// receiver is the business backend minigate delivers its events to: it
// answers 204 and counts.
type receiver struct {
	url       string
	delivered atomic.Int64
	srv       *http.Server
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: event receiver: %w", err)
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/events"}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// benchApp is the app every case uses: a WeChat mini-program with message
// push in safe mode (XML) and a WeChat Pay merchant in public-key mode.
type benchApp struct {
	sb  *sandbox.App
	cfg *config.App
}

const benchAppID = "bench-wx"

func newBenchApp(publicURL string) (*benchApp, error) {
	sb, cfg, err := sandbox.NewAppPair(sandbox.AppSpec{
		ID: benchAppID, Platform: sandbox.WeChat, PublicURL: publicURL,
		MessageMode: sandbox.PushModeSafe, MessageFormat: sandbox.PushFormatXML, Pay: true,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: app: %w", err)
	}
	return &benchApp{sb: sb, cfg: cfg}, nil
}

// writeConfig writes minigate's config for the run (through the
// simulator's own config writer) and adds the events section unless
// eventsURL is empty.
func writeConfig(dir, listen, dbURL, simURL, eventsURL string, a *benchApp) (string, error) {
	path, err := sandbox.WriteConfig(dir, sandbox.ConfigFile{
		Listen: listen, DatabaseURL: dbURL, PublicURL: "http://" + listen, APIKey: apiKey,
		SandboxURL: simURL, Apps: []*config.App{a.cfg},
	})
	if err != nil {
		return "", err
	}
	if eventsURL == "" {
		return path, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("bench: read config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Errorf("bench: parse config: %w", err)
	}
	doc["events"] = map[string]string{"url": eventsURL, "secret": eventsSecret}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("bench: encode config: %w", err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", fmt.Errorf("bench: write config: %w", err)
	}
	return path, nil
}

// instance is the minigate under test: a child process running the built
// binary, or (for profiling) an in-process app.
type instance struct {
	url string
	cmd *exec.Cmd
	app *app.App
	// pid is the process whose memory is reported (the child, or this
	// process when in-process).
	pid  int
	done chan error
	// log is the in-process instance's log file.
	log io.Closer
}

// startMinigate runs `minigate serve --config path` with its log in dir,
// and waits until /readyz answers.
func startMinigate(ctx context.Context, binary, path, dir, listen string) (*instance, error) {
	logf, err := os.Create(filepath.Join(dir, "minigate.log"))
	if err != nil {
		return nil, fmt.Errorf("bench: minigate log: %w", err)
	}
	cmd := exec.Command(binary, "serve", "--config", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = envWithout(os.Environ(), "DATABASE_URL") // the config's database, not the server's
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start minigate: %w", err)
	}
	in := &instance{url: "http://" + listen, cmd: cmd, pid: cmd.Process.Pid, done: make(chan error, 1)}
	go func() { in.done <- cmd.Wait(); logf.Close() }()
	if err := in.waitReady(ctx); err != nil {
		_ = in.stop()
		return nil, fmt.Errorf("%w (log: %s)", err, filepath.Join(dir, "minigate.log"))
	}
	return in, nil
}

// envWithout returns env without the variable named key.
func envWithout(env []string, key string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// startInProcess runs minigate inside this process (for -cpuprofile).
func startInProcess(ctx context.Context, path, dir, listen string) (*instance, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: read config: %w", err)
	}
	// The config's database, not $DATABASE_URL (the server's).
	cfg, err := config.Parse(raw, func(k string) (string, bool) {
		if k == "DATABASE_URL" {
			return "", false
		}
		return os.LookupEnv(k)
	})
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "minigate.log"))
	if err != nil {
		return nil, fmt.Errorf("bench: minigate log: %w", err)
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: slog.New(slog.NewJSONHandler(logf, nil)), Migrate: true})
	if err != nil {
		logf.Close()
		return nil, err
	}
	in := &instance{url: "http://" + listen, app: a, pid: os.Getpid(), done: make(chan error, 1), log: logf}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bench: listen: %w", err), in.stop())
	}
	if err := a.Start(ctx); err != nil {
		ln.Close()
		return nil, errors.Join(err, in.stop())
	}
	go func() { in.done <- a.Serve(ln) }()
	if err := in.waitReady(ctx); err != nil {
		return nil, errors.Join(err, in.stop())
	}
	return in, nil
}

func (in *instance) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-in.done:
			return fmt.Errorf("bench: minigate exited before it was ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(in.url + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	return errors.New("bench: minigate not ready after 60s")
}

// stop shuts minigate down gracefully.
func (in *instance) stop() error {
	if in.app != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := in.app.Shutdown(ctx)
		return errors.Join(err, in.log.Close())
	}
	_ = in.cmd.Process.Signal(os.Interrupt)
	select {
	case <-in.done:
		return nil
	case <-time.After(15 * time.Second):
		_ = in.cmd.Process.Kill()
		<-in.done
		return errors.New("bench: minigate did not stop within 15s; killed")
	}
}

// resetPeakRSS starts a new peak-RSS measurement for pid (Linux
// clear_refs "5"); it reports whether the kernel accepted it.
func resetPeakRSS(pid int) bool {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// peakRSS is pid's peak resident set size (VmHWM) in bytes, or 0.
func peakRSS(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
