package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minigate/minigate/internal/app"
	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/reconcile"
)

// Exit codes of `minigate reconcile` besides 0 (everything matches), 1
// (error) and 2 (usage).
const (
	// exitDiscrepancies: the report lists discrepancies.
	exitDiscrepancies = 3
	// exitNotReady: the platform has not generated the bill yet; retry
	// later (sysexits' EX_TEMPFAIL).
	exitNotReady = 75
)

// remoteTimeout bounds a reconciliation asked of a running server.
const remoteTimeout = 5 * time.Minute

// cmdReconcile downloads an app's bill for a day, compares it with the
// books, stores and prints the report. With a config (--config or
// MINIGATE_CONFIG) it runs in this process; without one it asks the
// sandbox-mode server on MINIGATE_LISTEN (or --server) through its API,
// since sandbox mode's keys and simulator live in that process.
func cmdReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reconcile", stderr)
	path := fs.String("config", "", "config file (default $MINIGATE_CONFIG; none: ask the sandbox-mode server)")
	appID := fs.String("app", "", "app id (required)")
	dateText := fs.String("date", "", "business day YYYY-MM-DD in Asia/Shanghai (default: yesterday)")
	format := fs.String("format", reconcile.FormatTable, "output: table, csv or json")
	server := fs.String("server", "", "reconcile through a running minigate at this URL (POST /v1/reconciliations)")
	apiKey := fs.String("api-key", "", "API key for --server (default $MINIGATE_API_KEY; sandbox mode's key without a config)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch *format {
	case reconcile.FormatTable, reconcile.FormatCSV, reconcile.FormatJSON:
	default:
		return &exitError{code: 2, err: fmt.Errorf("--format %q: want table, csv or json", *format)}
	}
	if *appID == "" {
		return &exitError{code: 2, err: errors.New("--app is required")}
	}
	date := reconcile.DateOf(time.Now()).AddDays(-1)
	if *dateText != "" {
		d, err := reconcile.ParseDate(*dateText)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--date: %w", err)}
		}
		date = d
	}
	if *path == "" {
		*path = os.Getenv("MINIGATE_CONFIG")
	}
	var (
		rep *reconcile.Report
		err error
	)
	if *path != "" && *server == "" {
		rep, err = reconcileLocally(ctx, *path, *appID, date, stderr)
	} else {
		rep, err = reconcileRemotely(ctx, *server, *apiKey, *path == "", *appID, date)
	}
	if err != nil {
		return err
	}
	if err := reconcile.WriteReport(stdout, rep, *format); err != nil {
		return err
	}
	if rep.Status != reconcile.StatusMatched {
		return &exitError{code: exitDiscrepancies}
	}
	return nil
}

// reconcileLocally builds minigate from the config without serving and
// runs the reconciliation here.
func reconcileLocally(ctx context.Context, path, appID string, date reconcile.Date, stderr io.Writer) (*reconcile.Report, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if cfg.App(appID) == nil {
		return nil, fmt.Errorf("no app %q in %s", appID, path)
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: cliLogger(stderr)})
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(sctx)
	}()
	if err := db.CheckSchema(ctx, a.DB.DB); err != nil {
		if errors.Is(err, db.ErrSchemaBehind) {
			return nil, fmt.Errorf("%w: run `minigate migrate` first", err)
		}
		return nil, err
	}
	rep, err := a.Reconciler().Run(ctx, appID, date, reconcile.TriggerCLI)
	var nr *reconcile.NotReadyError
	if errors.As(err, &nr) {
		return nil, &exitError{code: exitNotReady, err: errors.New(nr.Error())}
	}
	if ae, ok := apperr.As(err); ok {
		return nil, &exitError{code: 1, err: errors.New(ae.Code + ": " + ae.Message)}
	}
	return rep, err
}

// reconcileRemotely asks a running minigate: server and key, or without
// them, in sandbox mode, the sandbox-mode server on MINIGATE_LISTEN.
func reconcileRemotely(ctx context.Context, server, key string, sandboxMode bool, appID string, date reconcile.Date) (*reconcile.Report, error) {
	if key == "" {
		key = os.Getenv("MINIGATE_API_KEY")
	}
	if server == "" {
		if !sandboxMode {
			return nil, errors.New("--server is needed with --api-key only; pass --config to reconcile in this process")
		}
		base, err := sandboxServer()
		if err != nil {
			return nil, err
		}
		server = base
		if v := os.Getenv("MINIGATE_SANDBOX_API_KEY"); v != "" {
			key = v
		} else if key == "" {
			key = app.SandboxAPIKey
		}
	}
	body, err := json.Marshal(map[string]string{"app": appID, "date": date.String()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(server, "/")+"/v1/reconciliations", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("minigate at %s: %w (is `minigate serve` running?)", server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("minigate at %s: %w", server, err)
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error.Code == "" {
			return nil, fmt.Errorf("minigate at %s answered %s", server, resp.Status)
		}
		if e.Error.Code == "bill_not_ready" {
			return nil, &exitError{code: exitNotReady, err: errors.New(e.Error.Message)}
		}
		return nil, fmt.Errorf("minigate at %s: %s: %s", server, e.Error.Code, e.Error.Message)
	}
	var rep reconcile.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("minigate at %s: undecodable report: %w", server, err)
	}
	return &rep, nil
}

// sandboxServer is the sandbox-mode server's URL on this machine.
func sandboxServer() (string, error) {
	listen := config.DefaultListen
	if v := os.Getenv("MINIGATE_LISTEN"); v != "" {
		listen = v
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("MINIGATE_LISTEN %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// cliLogger logs JSON to stderr at MINIGATE_LOG_LEVEL, default warn: the
// report is the command's output.
func cliLogger(stderr io.Writer) *slog.Logger {
	level := slog.LevelWarn
	if v := os.Getenv("MINIGATE_LOG_LEVEL"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
}
