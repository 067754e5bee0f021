package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/sandbox"
)

var urlParse = url.Parse

func cmdSandbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sandbox", stderr)
	listen := fs.String("listen", ":9090", "address to listen on")
	minigateURL := fs.String("minigate-url", "http://127.0.0.1:8080", "minigate's public URL, where callbacks are sent")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sbApps, _, err := sandbox.DemoApps(*minigateURL)
	if err != nil {
		return err
	}
	sb := sandbox.New(sandbox.Options{Logger: newLogger(stderr)})
	for _, a := range sbApps {
		sb.AddApp(a)
	}
	srv := fiber.New(fiber.Config{DisableStartupMessage: true})
	srv.Mount("/sandbox", sb.Handler())
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
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
