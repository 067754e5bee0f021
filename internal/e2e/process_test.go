package e2e

import (
	"fmt"
	"io"
	"log/slog"
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

	"github.com/gofiber/fiber/v2"
	"gopkg.in/yaml.v3"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/sandbox"
)

// binDir holds the minigate binary built for the process tests.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildMinigate builds cmd/minigate once per test process.
var buildMinigate = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "minigate-e2e-bin")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "minigate")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/minigate/minigate/cmd/minigate").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build minigate: %v\n%s", err, out)
	}
	return bin, nil
})

// processAPIKey is the operator key of the process tests' configs.
const processAPIKey = "e2e-process-operator-key"

// deployment is minigate run as a real process from a config file that
// `sandbox.WriteConfig` wrote, against a simulator in the test process. It
// listens on a fixed port, so restarts keep the URL the platforms call.
type deployment struct {
	t      testing.TB
	bin    string
	config string
	URL    string
	Sim    *sandbox.Sandbox
	SimURL string
	Apps   map[string]*sandbox.App // by short name
	// Logs collects every line every run of the process wrote.
	Logs *testenv.LogBuffer

	mu  sync.Mutex
	cur *exec.Cmd
	end chan struct{}
}

// deploySpec adjusts a deployment.
type deploySpec struct {
	Apps        []sandbox.AppSpec
	DatabaseURL string
	Events      config.Events
	// Extra top-level config sections (jobs, limits, …), merged into the
	// written file.
	Extra map[string]any
	// Redeliver is the simulator's retry schedule.
	Redeliver []time.Duration
}

func deploy(t testing.TB, spec deploySpec) *deployment {
	t.Helper()
	bin, err := buildMinigate()
	if err != nil {
		t.Fatal(err)
	}
	sim := sandbox.New(sandbox.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Redeliver: spec.Redeliver})
	srv := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 20 << 20})
	srv.Mount("/sandbox", sim.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Listener(ln) }()
	t.Cleanup(func() {
		sim.SetRedelivery(nil)
		_ = srv.Shutdown()
	})
	addr := freePort(t)
	d := &deployment{t: t, bin: bin, URL: "http://" + addr, Sim: sim, SimURL: "http://" + ln.Addr().String() + "/sandbox",
		Apps: map[string]*sandbox.App{}, Logs: &testenv.LogBuffer{}}
	var cfgApps []*config.App
	for _, as := range spec.Apps {
		short := as.ID
		as.PublicURL, as.Key = d.URL, testenv.Key
		sbApp, cfgApp, err := sandbox.NewAppPair(as)
		if err != nil {
			t.Fatal(err)
		}
		sim.AddApp(sbApp)
		d.Apps[short] = sbApp
		cfgApps = append(cfgApps, cfgApp)
	}
	dir := t.TempDir()
	path, err := sandbox.WriteConfig(dir, sandbox.ConfigFile{
		Listen: addr, DatabaseURL: spec.DatabaseURL, PublicURL: d.URL, APIKey: processAPIKey,
		SandboxURL: d.SimURL, Apps: cfgApps,
	})
	if err != nil {
		t.Fatal(err)
	}
	extra := map[string]any{}
	for k, v := range spec.Extra {
		extra[k] = v
	}
	if spec.Events.URL != "" {
		extra["events"] = map[string]string{"url": spec.Events.URL, "secret": spec.Events.Secret}
	}
	if err := mergeYAML(path, extra); err != nil {
		t.Fatal(err)
	}
	d.config = path
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("minigate process logs (last 64 KiB):\n%s", d.Logs.Tail(64<<10))
		}
	})
	return d
}

// mergeYAML adds top-level keys to the YAML document at path.
func mergeYAML(path string, extra map[string]any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := map[string]any{}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return err
	}
	for k, v := range extra {
		doc[k] = v
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

// start runs minigate serve and waits until /readyz answers 200.
func (d *deployment) start() {
	d.t.Helper()
	cmd := exec.Command(d.bin, "serve", "--config", d.config)
	// The environment must not point the process elsewhere: DATABASE_URL
	// would win over the config's database.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "MINIGATE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "MINIGATE_LOG_LEVEL=debug")
	cmd.Stdout, cmd.Stderr = d.Logs, d.Logs
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	end := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(end)
	}()
	d.mu.Lock()
	d.cur, d.end = cmd, end
	d.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if s, _ := get(d.URL+"/readyz", time.Second); s == http.StatusOK {
			return
		}
		select {
		case <-end:
			d.t.Fatalf("minigate exited during start-up:\n%s", d.Logs.Tail(8<<10))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("minigate not ready after 60s:\n%s", d.Logs.Tail(8<<10))
		}
	}
}

// signal sends sig to the running process and waits for it to exit.
func (d *deployment) signal(sig syscall.Signal, wait time.Duration) {
	d.mu.Lock()
	cmd, end := d.cur, d.end
	d.cur = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-end:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-end
	}
}

// kill is kill -9.
func (d *deployment) kill() { d.signal(syscall.SIGKILL, 10*time.Second) }

// stop shuts the process down gracefully.
func (d *deployment) stop() { d.signal(syscall.SIGTERM, 30*time.Second) }

// do sends an API request to the process.
func (d *deployment) do(method, path string, body any, opts ...testenv.Opt) *testenv.Response {
	d.t.Helper()
	return testenv.Do(d.t, method, d.URL+path, body, opts...)
}
