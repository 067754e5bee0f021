// Package openapi holds minigate's API description: openapi.json beside
// this file, an OpenAPI 3.1 document of every /v1 route, served unchanged
// at GET /openapi.json. It is written by hand and kept true by tests: every
// /v1 route the server registers must be in it and nothing else
// (routes_test.go), and every /v1 exchange the end-to-end tests make is
// validated against it (internal/testenv). docs/api.md says how to add a
// route.
package openapi

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// Path is where minigate serves the document.
const Path = "/openapi.json"

//go:embed openapi.json
var document []byte

// Document returns the document's bytes. Callers must not modify them.
func Document() []byte { return document }

// Mount serves the document at GET Path, without credentials: it
// describes the API, it grants nothing.
func Mount(r fiber.Router) {
	r.Get(Path, func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.Send(document)
	})
}
