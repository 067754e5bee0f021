package sandbox

import (
	"context"
	"errors"

	"github.com/gofiber/fiber/v2"
)

// PLACEHOLDER: replaced by the QQ wallet simulator.
type qpayState struct{}

func newQPayState() *qpayState { return &qpayState{} }

func (s *Sandbox) mountQPay(r fiber.Router) {}

func (s *Sandbox) payQPay(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	return nil, errors.New("not yet simulated")
}
