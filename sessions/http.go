package sessions

import (
	"github.com/gofiber/fiber/v2"

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
