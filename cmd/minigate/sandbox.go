package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/app"
	"github.com/minigate/minigate/sandbox"
)

var urlParse = url.Parse

// cmdSandbox runs the simulator alone, with sandbox mode's demo apps. With
// --write-config DIR it also writes a minigate config (and key files) that
// points minigate at this simulator, for running the two as separate
// processes:
//
//	minigate sandbox --listen :9090 --write-config /tmp/mg &
//	minigate serve --config /tmp/mg/minigate.yaml
func cmdSandbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sandbox", stderr)
	listen := fs.String("listen", ":9090", "address to listen on")
	minigateURL := fs.String("minigate-url", "http://127.0.0.1:8080", "minigate's public URL, where callbacks are sent")
	writeConfig := fs.String("write-config", "", "directory to write a minigate config for this simulator into")
	dbURL := fs.String("database-url", app.SandboxDatabaseURL, "database_url for the written config")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sbApps, cfgApps, err := sandbox.DemoApps(*minigateURL)
	if err != nil {
		return err
	}
	sb := sandbox.New(sandbox.Options{Logger: newLogger(stderr)})
	for _, a := range sbApps {
		sb.AddApp(a)
	}
	srv := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 20 << 20})
	srv.Mount("/sandbox", sb.Handler())
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	if *writeConfig != "" {
		mg, err := urlParse(*minigateURL)
		if err != nil {
			return fmt.Errorf("--minigate-url: %w", err)
		}
		key := make([]byte, 12)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		apiKey := "sandbox-" + hex.EncodeToString(key)
		path, err := sandbox.WriteConfig(*writeConfig, sandbox.ConfigFile{
			Listen: ":" + portOf(mg), DatabaseURL: *dbURL, PublicURL: *minigateURL,
			APIKey: apiKey, SandboxURL: "http://" + ln.Addr().String() + "/sandbox", Apps: cfgApps,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (API key %s)\n", path, apiKey)
	}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown()
	}()
	var ids []string
	for _, a := range sbApps {
		ids = append(ids, a.ID+" ("+a.Platform+" "+a.AppID+")")
	}
	fmt.Fprintf(stdout, "sandbox listening on %s under /sandbox; apps: %s; callbacks go to %s\n",
		ln.Addr(), strings.Join(ids, ", "), *minigateURL)
	return srv.Listener(ln)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}
