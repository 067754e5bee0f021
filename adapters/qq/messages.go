package qq

import (
	"fmt"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/webhooks"
)

// NewMessageVerifier returns the webhooks.MessageVerifier for app's message
// pushes. QQ mini-programs push messages in WeChat's message-push protocol
// (token signature, optional EncodingAESKey encryption, XML or JSON), so the
// verifier is adapters/wechat's codec with the QQ app's id, token and key.
// QQ's own specification of the protocol could not be confirmed; this
// follows WeChat's.
func NewMessageVerifier(app *config.App, opts adapters.Options) (webhooks.MessageVerifier, error) {
	c, err := wechat.NewMessageCodec(app.AppID, app.Messages.Token, app.Messages.EncodingAESKey, opts.CallbackWindow, opts.Clock())
	if err != nil {
		return nil, fmt.Errorf("qq: app %q: %w", app.ID, err)
	}
	return c, nil
}
