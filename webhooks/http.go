package webhooks

import (
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/httpx"
)

// Paging limits of GET /v1/rejected-callbacks.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// MountOperator registers the operator routes on r:
//
//	GET /v1/rejected-callbacks?app=&kind=&cursor=&limit=
//
// which lists refused callbacks newest first (reason, detail, redacted
// query and headers, body size — not the body), with next_cursor for the
// following page.
func (p *Pipeline) MountOperator(r fiber.Router, au *auth.Authenticator) {
	r.Get("/v1/rejected-callbacks", au.Operator(), p.listRejected)
}

func (p *Pipeline) listRejected(c *fiber.Ctx) error {
	f := RejectedFilter{App: c.Query("app"), Kind: c.Query("kind"), Limit: DefaultPageSize}
	if s := c.Query("cursor"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return httpx.Invalid("cursor", "cursor must be a next_cursor from a previous page")
		}
		f.Before = n
	}
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return httpx.Invalid("limit", "limit must be between 1 and %d", MaxPageSize)
		}
		f.Limit = n
	}
	list, err := ListRejected(c.UserContext(), p.db, f)
	if err != nil {
		return err
	}
	next := ""
	if len(list) == f.Limit {
		next = strconv.FormatInt(list[len(list)-1].ID, 10)
	}
	return c.JSON(fiber.Map{"data": list, "next_cursor": next})
}
