package sandbox

import (
	"context"
	"errors"

	"github.com/gofiber/fiber/v2"
)

// PLACEHOLDER: replaced by the WeChat simulator.
type wechatState struct{}

func newWeChatState() *wechatState { return &wechatState{} }

func (s *Sandbox) mountWeChat(r fiber.Router) {}

func (s *Sandbox) pushWeChatMessage(ctx context.Context, a *App, u User, req PushRequest) (*Report, error) {
	return nil, errors.New("not yet simulated")
}
