package app

import (
	"context"

	"github.com/riverqueue/river"

	"github.com/minigate/minigate/internal/auth"
)

// buildModules constructs the domain services, registers their River workers
// and periodic jobs, and collects their routes.
func (a *App) buildModules(ctx context.Context, opts Options, workers *river.Workers) (*modules, error) {
	m := &modules{}
	m.auth = auth.New(a.Config.APIKeys, nil)
	return m, nil
}
