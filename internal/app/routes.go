package app

import (
	"context"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/httpx"
	"github.com/minigate/minigate/internal/openapi"
)

func (a *App) routes(m *modules) {
	a.HTTP.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	a.HTTP.Get("/readyz", a.ready)
	httpx.MountMetrics(a.HTTP)
	openapi.Mount(a.HTTP)
	for _, r := range m.routes {
		r(a.HTTP, m.auth)
	}
}

// readyTimeout bounds /readyz: a database that has not answered by then is
// unreachable as far as traffic is concerned.
const readyTimeout = 2 * time.Second

// ready reports whether the database is reachable and its schema current.
// It answers within readyTimeout even when the database does not answer at
// all (db.Bounded).
func (a *App) ready(c *fiber.Ctx) error {
	_, err := db.Bounded(c.UserContext(), readyTimeout, func(ctx context.Context) (struct{}, error) {
		if err := a.DB.PingContext(ctx); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, db.CheckSchema(ctx, a.DB.DB)
	})
	switch {
	case errors.Is(err, db.ErrSchemaBehind):
		return apperr.Wrap(err, apperr.NotReady, "schema_behind", err.Error())
	case err != nil:
		return apperr.Wrap(err, apperr.NotReady, "database_unreachable", "the database is unreachable")
	}
	return c.JSON(fiber.Map{"status": "ready"})
}
