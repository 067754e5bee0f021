package qq

import (
	"errors"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/config"
)

// NewCustomerService returns app's customer-service API: send, typing and
// temporary media in WeChat's protocol shape (wechat.CustomerProtocol)
// against opts.Endpoints.QQAPI — the same paths below the base
// (/cgi-bin/message/custom/send, /cgi-bin/message/custom/typing,
// /cgi-bin/media/upload, /cgi-bin/media/get), the same bodies, errcodes and
// reply windows. QQ's own documentation for mini-program customer-service
// sends could not be confirmed, so this is modelled on WeChat (see
// docs/customer-service.md). The access token comes from opts.Tokens
// (getToken, shared through Postgres); an invalid-token answer (40001,
// 40014, 42001) refreshes it once and repeats the call once.
func NewCustomerService(app *config.App, opts adapters.Options) (*wechat.CustomerProtocol, error) {
	if app == nil || app.AppID == "" {
		return nil, errors.New("qq: new customer service: app_id is required")
	}
	if opts.Tokens == nil {
		return nil, errors.New("qq: app " + app.ID + ": customer service needs an access token source")
	}
	return &wechat.CustomerProtocol{
		Platform: PlatformQQ,
		Base:     endpoint(opts.Endpoints.QQAPI, config.DefaultQQAPI),
		HTTP:     newHTTPClient(opts.Timeout),
		Tokens:   opts.Tokens,
		Reason:   wechat.CustomerReason,
		Now:      opts.Clock(),
	}, nil
}
