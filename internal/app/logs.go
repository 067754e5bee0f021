package app

import (
	"context"
	"log/slog"
)

// quietHandler passes records on one level lower when they are below
// WARN: River reports routine work (a client started, a producer's job
// counts every few seconds) at INFO, which is DEBUG for someone reading
// minigate's log. Warnings and errors keep their level.
type quietHandler struct{ next slog.Handler }

// quieted returns log with its records below WARN demoted to DEBUG.
func quieted(log *slog.Logger) *slog.Logger { return slog.New(quietHandler{log.Handler()}) }

func (h quietHandler) level(l slog.Level) slog.Level {
	if l < slog.LevelWarn {
		return slog.LevelDebug
	}
	return l
}

// Enabled implements slog.Handler.
func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, h.level(l))
}

// Handle implements slog.Handler.
func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = h.level(r.Level)
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.next.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.next.WithGroup(name)}
}
