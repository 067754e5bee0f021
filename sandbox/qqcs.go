package sandbox

import "github.com/gofiber/fiber/v2"

// QQ mini-program customer service under /sandbox/qq, modelled on WeChat's
// (wechatcs.go): the same paths below the base, bodies, windows and
// errcodes, with QQ's access tokens (getToken) and QQ's token errcodes
// (40014 unknown, 42001 expired). QQ's own documentation for these APIs
// could not be confirmed; see docs/customer-service.md.

func (s *Sandbox) qqCSDialect() csDialect {
	return csDialect{
		tokenApp: func(c *fiber.Ctx) (*App, error) {
			a, code := s.qqTokenApp(c.Query("access_token"))
			switch {
			case code == qqErrTokenExpired:
				return nil, qqError(c, code, "access_token expired")
			case code != 0 || a == nil || a.Platform != QQ:
				return nil, qqError(c, qqErrInvalidToken, "invalid access_token")
			}
			return a, nil
		},
		injected: s.qqInjected,
		fail:     qqError,
	}
}

func (s *Sandbox) mountQQCS(r fiber.Router) {
	d := s.qqCSDialect()
	s.mountCS(r, d)
	r.Get("/cgi-bin/media/get", func(c *fiber.Ctx) error { return s.csMediaGet(c, d) })
}

// InvalidateQQTokens makes app's (minigate id) access tokens invalid at
// once: the next API call with one of them answers 40014.
func (s *Sandbox) InvalidateQQTokens(app string) {
	st := s.qq
	st.mu.Lock()
	defer st.mu.Unlock()
	for v, t := range st.tokens {
		if t.app == app {
			delete(st.tokens, v)
		}
	}
}

// handleQQInvalidateTokens is POST /sandbox/apps/{app}/tokens/invalidate
// for QQ apps.
func (s *Sandbox) handleQQInvalidateTokens(c *fiber.Ctx, a *App) error {
	s.InvalidateQQTokens(a.ID)
	return c.JSON(fiber.Map{"invalidated": true})
}
