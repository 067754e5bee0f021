package sessions

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/auth"
	"github.com/minigate/minigate/internal/httpx"
)

// Routes mounts the session routes: login without credentials, the rest
// with a session token.
func (s *Service) Routes(r fiber.Router, au *auth.Authenticator) {
	r.Post("/v1/apps/:app/sessions", s.handleLogin)
	r.Get("/v1/me", au.User(), s.handleMe)
	r.Delete("/v1/sessions/current", au.User(), s.handleLogout)
	r.Post("/v1/me/phone", au.User(), s.handlePhone)
	r.Post("/v1/me/decrypt", au.User(), s.handleDecrypt)
	r.Post("/v1/me/identities", au.User(), s.handleLink)
	r.Delete("/v1/me/identities/:identity_id", au.User(), s.handleUnlink)
	r.Get("/v1/users", au.Operator(), s.handleLookup)
	r.Get("/v1/users/:id", au.Operator(), s.handleGetUser)
	r.Patch("/v1/users/:id", au.Operator(), s.handlePatchUser)
	r.Delete("/v1/users/:id", au.Operator(), s.handleDeleteUser)
}

type linkRequest struct {
	App  string `json:"app"`
	Code string `json:"code"`
}

func (s *Service) handleLink(c *fiber.Ctx) error {
	var req linkRequest
	if err := httpx.BindJSON(c, &req); err != nil {
		return err
	}
	if req.App == "" {
		return httpx.Invalid("app", "app is required")
	}
	res, err := s.Link(c.UserContext(), auth.FromCtx(c), req.App, req.Code)
	if err != nil {
		return err
	}
	status := fiber.StatusOK // already linked to this user
	if res.Linked {
		status = fiber.StatusCreated
	}
	return c.Status(status).JSON(res.User)
}

func (s *Service) handleUnlink(c *fiber.Ctx) error {
	u, err := s.Unlink(c.UserContext(), auth.FromCtx(c), c.Params("identity_id"))
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (s *Service) handleGetUser(c *fiber.Ctx) error {
	u, err := s.GetUser(c.UserContext(), c.Params("id"))
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (s *Service) handleLookup(c *fiber.Ctx) error {
	f := LookupFilter{
		App: c.Query("app"), OpenID: c.Query("openid"),
		UnionScope: c.Query("union_scope"), UnionID: c.Query("unionid"),
		Phone: c.Query("phone"), ExternalSource: c.Query("external_source"), ExternalID: c.Query("external_id"),
		Cursor: c.Query("cursor"),
	}
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return httpx.Invalid("limit", "limit must be a positive integer")
		}
		f.Limit = n
	}
	page, err := s.LookupUsers(c.UserContext(), f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

// patchUserRequest is PATCH /v1/users/{id}: metadata keys to set (a null
// value removes the key), or "metadata": null to clear it all.
type patchUserRequest struct {
	Metadata json.RawMessage `json:"metadata"`
}

func (s *Service) handlePatchUser(c *fiber.Ctx) error {
	if len(c.Body()) > maxPatchBody {
		return apperr.Newf(apperr.TooLarge, "body_too_large", "request body exceeds %d bytes", maxPatchBody)
	}
	var req patchUserRequest
	if err := httpx.BindJSON(c, &req); err != nil {
		return err
	}
	raw := bytes.TrimSpace(req.Metadata)
	var (
		patch map[string]json.RawMessage
		clear bool
	)
	switch {
	case len(raw) == 0:
		return httpx.Invalid("metadata", "metadata is required: an object of keys to set (null removes a key), or null to clear")
	case bytes.Equal(raw, []byte("null")):
		clear = true
	case raw[0] != '{':
		return httpx.Invalid("metadata", "metadata must be a JSON object")
	default:
		if err := json.Unmarshal(raw, &patch); err != nil {
			return httpx.Invalid("metadata", "metadata must be a JSON object")
		}
	}
	u, err := s.UpdateMetadata(c.UserContext(), c.Params("id"), patch, clear)
	if err != nil {
		return err
	}
	return c.JSON(u)
}

// maxPatchBody bounds PATCH /v1/users/{id}: the metadata it may set, and
// room for the keys it removes.
const maxPatchBody = 4 * MaxMetadataBytes

func (s *Service) handleDeleteUser(c *fiber.Ctx) error {
	d, err := s.DeleteUser(c.UserContext(), c.Params("id"), auth.FromCtx(c).KeyName)
	if err != nil {
		return err
	}
	return c.JSON(d)
}

type loginRequest struct {
	Code          string `json:"code"`
	PreferUnionID bool   `json:"prefer_unionid"`
}

func (s *Service) handleLogin(c *fiber.Ctx) error {
	var req loginRequest
	if err := httpx.BindJSON(c, &req); err != nil {
		return err
	}
	res, err := s.Login(c.UserContext(), c.Params("app"), req.Code, req.PreferUnionID)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(res)
}

func (s *Service) handleMe(c *fiber.Ctx) error {
	me, err := s.Me(c.UserContext(), auth.FromCtx(c))
	if err != nil {
		return err
	}
	return c.JSON(me)
}

func (s *Service) handleLogout(c *fiber.Ctx) error {
	if err := s.Logout(c.UserContext(), auth.FromCtx(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

type phoneRequest struct {
	Code string `json:"code"`
}

func (s *Service) handlePhone(c *fiber.Ctx) error {
	var req phoneRequest
	if err := httpx.BindJSON(c, &req); err != nil {
		return err
	}
	p, err := s.PhoneNumber(c.UserContext(), auth.FromCtx(c), req.Code)
	if err != nil {
		return err
	}
	return c.JSON(p)
}

type decryptRequest struct {
	EncryptedData string `json:"encrypted_data"`
	IV            string `json:"iv"`
}

func (s *Service) handleDecrypt(c *fiber.Ctx) error {
	var req decryptRequest
	if err := httpx.BindJSON(c, &req); err != nil {
		return err
	}
	out, err := s.Decrypt(c.UserContext(), auth.FromCtx(c), req.EncryptedData, req.IV)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
	return c.Send(out)
}
