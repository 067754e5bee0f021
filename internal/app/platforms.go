package app

import (
	"log/slog"

	"github.com/minigate/minigate/internal/config"
)

// Platform holds one configured app's adapters, one field per domain
// interface. buildPlatforms fills them explicitly, per platform: this is the
// only place that knows which adapter serves which app.
type Platform struct {
	App *config.App
}

// buildPlatforms builds the adapters for every configured app.
func buildPlatforms(cfg *config.Config, log *slog.Logger) (map[string]*Platform, error) {
	out := make(map[string]*Platform, len(cfg.Apps))
	for _, a := range cfg.Apps {
		p := &Platform{App: a}
		out[a.ID] = p
	}
	return out, nil
}
