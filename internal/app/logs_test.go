package app

import (
	"log/slog"
	"strings"
	"testing"
)

func TestQuietedDemotesRoutineLines(t *testing.T) {
	var buf strings.Builder
	log := quieted(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))).With("component", "river")
	log.Info("producer: Producer job counts", "num_completed_jobs", 2)
	log.Warn("job failed", "attempt", 1)
	log.Error("elector: leadership lost")
	out := buf.String()
	if strings.Contains(out, "job counts") {
		t.Errorf("an INFO line got through at level info:\n%s", out)
	}
	for _, want := range []string{`"level":"WARN","msg":"job failed","component":"river"`, `"level":"ERROR","msg":"elector: leadership lost"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	buf.Reset()
	debug := quieted(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	debug.Info("River client started")
	if !strings.Contains(buf.String(), `"level":"DEBUG","msg":"River client started"`) {
		t.Errorf("at level debug the line is not DEBUG: %s", buf.String())
	}
}
