package app

import (
	"context"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/db"
	"github.com/minigate/minigate/internal/httpx"
)

func (a *App) routes(m *modules) {
	a.HTTP.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	a.HTTP.Get("/readyz", a.ready)
	httpx.MountMetrics(a.HTTP)
	for _, r := range m.routes {
		r(a.HTTP, m.auth)
	}
}

// ready reports whether the database is reachable and its schema current.
func (a *App) ready(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	if err := a.DB.PingContext(ctx); err != nil {
		return apperr.Wrap(err, apperr.NotReady, "database_unreachable", "the database is unreachable")
	}
	if err := db.CheckSchema(ctx, a.DB.DB); err != nil {
		if errors.Is(err, db.ErrSchemaBehind) {
			return apperr.Wrap(err, apperr.NotReady, "schema_behind", err.Error())
		}
		return apperr.Wrap(err, apperr.NotReady, "database_unreachable", "the database schema could not be checked")
	}
	return c.JSON(fiber.Map{"status": "ready"})
}
