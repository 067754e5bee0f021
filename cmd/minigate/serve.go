package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/minigate/minigate/internal/app"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/sandbox"
)

// loadConfig reads --config or MINIGATE_CONFIG. Without either it returns
// sandbox mode's config and simulator when allowSandbox, else an error.
func loadConfig(path string, allowSandbox bool) (*config.Config, *sandbox.Sandbox, error) {
	if path == "" {
		path = os.Getenv("MINIGATE_CONFIG")
	}
	if path != "" {
		cfg, err := config.Load(path)
		return cfg, nil, err
	}
	if !allowSandbox {
		return nil, nil, fmt.Errorf("no config: pass --config FILE or set MINIGATE_CONFIG")
	}
	return app.SandboxMode(os.LookupEnv)
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	path := fs.String("config", "", "config file (default $MINIGATE_CONFIG; none = sandbox mode)")
	noMigrate := fs.Bool("no-migrate", false, "do not apply pending migrations at start")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, sb, err := loadConfig(*path, true)
	if err != nil {
		return err
	}
	log := newLogger(stderr)
	a, err := app.New(ctx, cfg, app.Options{Logger: log, Migrate: !*noMigrate, Sandbox: sb})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = a.Shutdown(context.Background())
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Shutdown(context.Background())
		return err
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ln) }()
	log.Info("minigate serving", "listen", cfg.Listen, "apps", len(cfg.Apps), "sandbox", cfg.Sandbox, "version", version, "commit", buildCommit())
	if cfg.Sandbox {
		printSandboxBanner(stdout, cfg)
	}
	select {
	case err := <-served:
		_ = a.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return a.Shutdown(sctx)
}

func printSandboxBanner(w io.Writer, cfg *config.Config) {
	base := cfg.PublicURL
	fmt.Fprintf(w, `
minigate is running in SANDBOX MODE (no config file): every platform is simulated.
  listening on   %s   (MINIGATE_LISTEN to change)
  simulator at   %s/sandbox/{wechat,wechatpay,qq,qpay,alipay}
  demo apps      demo-wechat, demo-qq (union scope "demo"), demo-alipay
  API key        %s   (MINIGATE_SANDBOX_API_KEY to change)
  database       %s

First steps:
  CODE=$(curl -s -X POST %s/sandbox/apps/demo-wechat/users/alice/code | sed 's/.*"code":"\([^"]*\)".*/\1/')
  curl -s -X POST %s/v1/apps/demo-wechat/sessions -H 'Content-Type: application/json' -d "{\"code\":\"$CODE\"}"

`, base, base, cfg.APIKeys[0].Key, redactURL(cfg.DatabaseURL), base, base)
}

// redactURL hides a password in a database URL.
func redactURL(s string) string {
	if u, err := urlParse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
	}
	return s
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", stderr)
	path := fs.String("config", "", "config file (default $MINIGATE_CONFIG; none = sandbox mode's database)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, _, err := loadConfig(*path, true)
	if err != nil {
		return err
	}
	pool, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := db.Migrate(ctx, pool.DB)
	if err != nil {
		return err
	}
	for _, name := range applied {
		fmt.Fprintln(stdout, "applied", name)
	}
	fmt.Fprintf(stdout, "schema is current (%d migrations)\n", db.MigrationCount())
	return nil
}
