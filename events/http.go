package events

import (
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/httpx"
	"github.com/minigate/minigate/internal/ids"
)

// Paging limits of GET /v1/events.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// Mount registers the operator routes (API key) on r:
//
//	GET  /v1/events?type=&state=&cursor=&limit=  newest first → {"data": [event…], "next_cursor"}
//	GET  /v1/events/:id                          → the event with "deliveries" (every attempt)
//	POST /v1/events/:id/redeliver                → 202, the event (pending), sent again now
func (s *Service) Mount(r fiber.Router, au *auth.Authenticator) {
	g := r.Group("/v1/events", au.Operator())
	g.Get("/", s.handleList)
	g.Get("/:id", s.handleGet)
	g.Post("/:id/redeliver", s.handleRedeliver)
}

func (s *Service) handleList(c *fiber.Ctx) error {
	p := ListParams{Type: c.Query("type"), State: State(c.Query("state")), Before: c.Query("cursor"), Limit: DefaultPageSize}
	if p.State != "" && !p.State.Valid() {
		return httpx.Invalid("state", "state must be pending, delivered, failed or not_configured")
	}
	if p.Before != "" && !ids.Valid("evt", p.Before) {
		return httpx.Invalid("cursor", "cursor must be a next_cursor from a previous page")
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			return httpx.Invalid("limit", "limit must be between 1 and %d", MaxPageSize)
		}
		p.Limit = n
	}
	list, err := s.List(c.UserContext(), p)
	if err != nil {
		return err
	}
	next := ""
	if len(list) == p.Limit {
		next = list[len(list)-1].ID
	}
	return c.JSON(fiber.Map{"data": list, "next_cursor": next})
}

func (s *Service) handleGet(c *fiber.Ctx) error {
	ev, ds, err := s.Get(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(struct {
		Event
		Deliveries []Delivery `json:"deliveries"`
	}{ev, ds})
}

func (s *Service) handleRedeliver(c *fiber.Ctx) error {
	ev, err := s.Redeliver(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(ev)
}
