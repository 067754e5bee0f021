package reconcile

import (
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/httpx"
)

// Mount registers the operator routes:
//
//	POST /v1/reconciliations      {"app", "date"} → 201 report
//	GET  /v1/reconciliations/:id  → report with its discrepancies
func (s *Service) Mount(r fiber.Router, au *auth.Authenticator) {
	r.Post("/v1/reconciliations", au.Operator(), s.handleRun)
	r.Get("/v1/reconciliations/:id", au.Operator(), s.handleGet)
}

// runBody is POST /v1/reconciliations's body.
type runBody struct {
	App  string `json:"app"`
	Date string `json:"date"`
}

func (s *Service) handleRun(c *fiber.Ctx) error {
	var b runBody
	if err := httpx.BindJSON(c, &b); err != nil {
		return err
	}
	if strings.TrimSpace(b.App) == "" {
		return apperr.New(apperr.Invalid, "invalid_app", "app is required")
	}
	date, err := ParseDate(b.Date)
	if err != nil {
		return apperr.Wrap(err, apperr.Invalid, "invalid_date", "date must be YYYY-MM-DD")
	}
	rep, err := s.Run(c.UserContext(), b.App, date, TriggerAPI)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(rep)
}

func (s *Service) handleGet(c *fiber.Ctx) error {
	rep, err := s.Get(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(rep)
}
