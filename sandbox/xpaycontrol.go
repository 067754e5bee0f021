package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/gofiber/fiber/v2"
)

// Virtual payment control routes (WeChat apps), below /sandbox/apps/{app}:
//
//	POST /users/{name}/virtual-payment       {"mode","signData","paySig","signature","faults"}: wx.requestVirtualPayment
//	POST /users/{name}/session-key/expire    the user's session_key expires at the platform
//	GET  /users/{name}/coins?env=0           the user's coin balance
//	POST /virtual-payment/orders/{out_trade_no}/deliver     {"env","faults"}: push the delivery (or coin payment) again
//	POST /virtual-payment/orders/{out_trade_no}/complaint   {"env","detail","faults"}: the payer complains
//	POST /virtual-payment/refunds/{refund_order_id}/notify  {"env","faults"}: push the refund result again

// XPayControlRequest is the body of the virtual payment control routes
// that push again.
type XPayControlRequest struct {
	// Env is the virtual payment environment: 0 production, 1 sandbox.
	Env    int    `json:"env"`
	Detail string `json:"detail,omitempty"`
	Faults Faults `json:"faults"`
}

func (s *Sandbox) mountXPayControl(g fiber.Router) {
	g.Post("/users/:name/virtual-payment", s.platformControl(WeChat, s.handleRequestVirtualPayment))
	g.Post("/users/:name/session-key/expire", s.platformControl(WeChat, s.handleExpireSessionKey))
	g.Get("/users/:name/coins", s.platformControl(WeChat, s.handleXPayCoins))
	g.Post("/virtual-payment/orders/:out_trade_no/deliver", s.platformControl(WeChat, s.handleXPayDeliver))
	g.Post("/virtual-payment/orders/:out_trade_no/complaint", s.platformControl(WeChat, s.handleXPayComplaint))
	g.Post("/virtual-payment/refunds/:refund_order_id/notify", s.platformControl(WeChat, s.handleXPayRefundNotify))
}

func (s *Sandbox) handleRequestVirtualPayment(c *fiber.Ctx, a *App) error {
	var p XPayPayment
	if err := json.Unmarshal(c.Body(), &p); err != nil {
		return fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
	}
	rep, err := s.RequestVirtualPayment(c.UserContext(), a, c.Params("name"), p)
	var ce *XPayClientError
	if errors.As(err, &ce) {
		return c.Status(fiber.StatusBadRequest).JSON(ce)
	}
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	return c.JSON(rep)
}

func (s *Sandbox) handleExpireSessionKey(c *fiber.Ctx, a *App) error {
	expired := s.ExpireSessionKey(a.ID, c.Params("name"))
	return c.JSON(fiber.Map{"app": a.ID, "user": c.Params("name"), "expired": expired})
}

func (s *Sandbox) handleXPayCoins(c *fiber.Ctx, a *App) error {
	env, err := strconv.Atoi(c.Query("env", "0"))
	if err != nil || (env != 0 && env != 1) {
		return fiber.NewError(fiber.StatusBadRequest, "env must be 0 or 1")
	}
	return c.JSON(s.XPayCoins(a.ID, env, c.Params("name")))
}

// xpayControlBody reads an optional XPayControlRequest.
func xpayControlBody(c *fiber.Ctx) (XPayControlRequest, error) {
	var req XPayControlRequest
	if len(bytes.TrimSpace(c.Body())) > 0 {
		if err := json.Unmarshal(c.Body(), &req); err != nil {
			return req, fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
		}
	}
	if req.Env != 0 && req.Env != 1 {
		return req, fiber.NewError(fiber.StatusBadRequest, "env must be 0 or 1")
	}
	return req, nil
}

// xpayControl makes a push-again control route from push.
func xpayControl(push func(c *fiber.Ctx, a *App, req XPayControlRequest) (*Report, error)) func(*fiber.Ctx, *App) error {
	return func(c *fiber.Ctx, a *App) error {
		req, err := xpayControlBody(c)
		if err != nil {
			return err
		}
		rep, err := push(c, a, req)
		if err != nil {
			return fiber.NewError(fiber.StatusBadRequest, err.Error())
		}
		return c.JSON(rep)
	}
}

func (s *Sandbox) handleXPayDeliver(c *fiber.Ctx, a *App) error {
	return xpayControl(func(c *fiber.Ctx, a *App, req XPayControlRequest) (*Report, error) {
		return s.XPayDeliver(c.UserContext(), a, req.Env, c.Params("out_trade_no"), req.Faults)
	})(c, a)
}

func (s *Sandbox) handleXPayComplaint(c *fiber.Ctx, a *App) error {
	return xpayControl(func(c *fiber.Ctx, a *App, req XPayControlRequest) (*Report, error) {
		return s.XPayComplaint(c.UserContext(), a, req.Env, c.Params("out_trade_no"), req.Detail, req.Faults)
	})(c, a)
}

func (s *Sandbox) handleXPayRefundNotify(c *fiber.Ctx, a *App) error {
	return xpayControl(func(c *fiber.Ctx, a *App, req XPayControlRequest) (*Report, error) {
		return s.XPayRefundNotify(c.UserContext(), a, req.Env, c.Params("refund_order_id"), req.Faults)
	})(c, a)
}
