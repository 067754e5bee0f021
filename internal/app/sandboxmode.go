package app

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/sandbox"
)

// Sandbox mode defaults (see the contract).
const (
	SandboxAPIKey      = "sandbox"
	SandboxDatabaseURL = "postgres://postgres@127.0.0.1:5432/minigate?sslmode=disable"
)

// SandboxMode builds the configuration and simulator for `minigate serve`
// without a config file: demo apps for WeChat, QQ and Alipay whose endpoints
// point at the simulator mounted under /sandbox on the same listener, with
// keys generated now. lookup reads MINIGATE_LISTEN,
// MINIGATE_SANDBOX_API_KEY, DATABASE_URL, and MINIGATE_EVENTS_URL with
// MINIGATE_EVENTS_SECRET (where to deliver events; unset: recorded only).
func SandboxMode(lookup func(string) (string, bool)) (*config.Config, *sandbox.Sandbox, error) {
	listen := config.DefaultListen
	if v, ok := lookup("MINIGATE_LISTEN"); ok && v != "" {
		listen = v
	}
	apiKey := SandboxAPIKey
	if v, ok := lookup("MINIGATE_SANDBOX_API_KEY"); ok && v != "" {
		apiKey = v
	}
	dbURL := SandboxDatabaseURL
	if v, ok := lookup("DATABASE_URL"); ok && v != "" {
		dbURL = v
	}
	public, err := localURL(listen)
	if err != nil {
		return nil, nil, err
	}
	sbApps, cfgApps, err := sandbox.DemoApps(public)
	if err != nil {
		return nil, nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, fmt.Errorf("app: sandbox secret: %w", err)
	}
	cfg := &config.Config{
		Listen:      listen,
		DatabaseURL: dbURL,
		PublicURL:   public,
		SecretKey:   hex.EncodeToString(secret),
		APIKeys:     []config.APIKey{{Name: "sandbox", Key: apiKey}},
		Endpoints:   sandbox.Endpoints(public + "/sandbox"),
		Apps:        cfgApps,
		Sandbox:     true,
	}
	if v, ok := lookup("MINIGATE_EVENTS_URL"); ok && v != "" {
		cfg.Events.URL = v
		cfg.Events.Secret, _ = lookup("MINIGATE_EVENTS_SECRET")
	}
	if err := config.Finish(cfg); err != nil {
		return nil, nil, err
	}
	sb := sandbox.New(sandbox.Options{})
	for _, a := range sbApps {
		sb.AddApp(a)
	}
	return cfg, sb, nil
}

// localURL turns a listen address into a URL reachable from this machine.
func localURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("app: listen address %q: %w", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "http://" + host + ":" + port, nil
}
