package sandbox

import (
	"context"
	"errors"

	"github.com/gofiber/fiber/v2"
)

// PLACEHOLDER: replaced by the Alipay simulator.
type alipayState struct{}

func newAlipayState() *alipayState { return &alipayState{} }

func (s *Sandbox) mountAlipay(r fiber.Router) {}

func (s *Sandbox) pushAlipayMessage(ctx context.Context, a *App, u User, req PushRequest) (*Report, error) {
	return nil, errors.New("not yet simulated")
}

func (s *Sandbox) payAlipay(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	return nil, errors.New("not yet simulated")
}
