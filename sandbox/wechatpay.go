package sandbox

import (
	"context"
	"errors"

	"github.com/gofiber/fiber/v2"
)

// PLACEHOLDER: replaced by the WeChat Pay simulator.
type wechatPayState struct{}

func newWeChatPayState() *wechatPayState { return &wechatPayState{} }

func (s *Sandbox) mountWeChatPay(r fiber.Router) {}

func (s *Sandbox) payWeChat(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	return nil, errors.New("not yet simulated")
}
