package wechat

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/silenceper/wechat/v2/credential"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	mpcontext "github.com/silenceper/wechat/v2/miniprogram/context"
	"github.com/silenceper/wechat/v2/miniprogram/message"
	"github.com/silenceper/wechat/v2/util"

	"github.com/minigate/minigate/adapters"
	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/internal/config"
)

// CustomerService is a WeChat mini-program's customer-service API
// (customerservice.Platform). Messages go out through silenceper's
// customer-message manager (miniprogram/message); typing and temporary
// media, which silenceper's mini-program package lacks, through the
// embedded hand-written CustomerProtocol at opts.Endpoints.WeChatAPI. Both
// take the access token from opts.Tokens and refresh it once when WeChat
// says it is invalid.
type CustomerService struct {
	*CustomerProtocol
	mp *mpconfig.Config
}

var _ customerservice.Platform = (*CustomerService)(nil)

// NewCustomerService returns app's customer-service API. Like New, it
// points silenceper at opts.Endpoints.WeChatAPI (process-wide) and fails
// when this process already talks to another WeChat endpoint.
func NewCustomerService(app *config.App, opts adapters.Options) (*CustomerService, error) {
	if app == nil || app.AppID == "" || app.AppSecret == "" {
		return nil, errors.New("wechat: new customer service: app_id and app_secret are required")
	}
	if opts.Tokens == nil {
		return nil, fmt.Errorf("wechat: app %q: customer service needs an access token source", app.ID)
	}
	timeout := miniprogramTimeout(opts)
	if err := useMiniprogramEndpoint(opts.Endpoints.WeChatAPI, timeout); err != nil {
		return nil, fmt.Errorf("wechat: app %q: %w", app.ID, err)
	}
	base := strings.TrimRight(opts.Endpoints.WeChatAPI, "/")
	if base == "" {
		base = config.DefaultWeChatAPI
	}
	hc, err := adapters.NewHTTPClient(timeout, "", "")
	if err != nil {
		return nil, fmt.Errorf("wechat: app %q: %w", app.ID, err)
	}
	return &CustomerService{
		CustomerProtocol: &CustomerProtocol{
			Platform: miniprogramPlatform, Base: base, HTTP: hc, Tokens: opts.Tokens,
			Reason: CustomerReason, Now: opts.Clock(),
		},
		mp: &mpconfig.Config{AppID: app.AppID, AppSecret: app.AppSecret},
	}, nil
}

// SendMessage sends m with silenceper's customer-message manager (POST
// /cgi-bin/message/custom/send). The manager takes no context: the call is
// bounded by the client timeout silenceper was given (Options.Timeout).
func (c *CustomerService) SendMessage(ctx context.Context, m customerservice.Outbound) error {
	msg, err := silenceperMessage(m)
	if err != nil {
		return fmt.Errorf("wechat: customer-service send: %w", err)
	}
	h := &sourceToken{ctx: ctx, src: c.Tokens}
	mgr := message.NewCustomerMessageManager(&mpcontext.Context{Config: c.mp, AccessTokenContextHandle: h})
	err = c.sendOnce(mgr, h, msg)
	if adapters.HasReason(err, adapters.ReasonInvalidToken) {
		h.stale = h.used
		err = c.sendOnce(mgr, h, msg)
	}
	if err != nil {
		return fmt.Errorf("wechat: customer-service send: %w", err)
	}
	return nil
}

func (c *CustomerService) sendOnce(mgr *message.Manager, h *sourceToken, msg *message.CustomerMessage) error {
	start := time.Now()
	err := mgr.Send(msg)
	if h.err != nil {
		// The token source failed: nothing was sent.
		return fmt.Errorf("access token: %w", h.err)
	}
	var ce *util.CommonError
	var code int64
	var text string
	if errors.As(err, &ce) {
		code, text = ce.ErrCode, ce.ErrMsg
	}
	err = customerCallError(apiCustomSend, code, text, err)
	adapters.Observe(miniprogramPlatform, apiCustomSend, start, err)
	return err
}

// customerCallError is miniprogramError with the customer-service codes.
func customerCallError(api string, code int64, msg string, err error) error {
	if code != 0 {
		return &adapters.PlatformError{Platform: miniprogramPlatform, API: api, Reason: CustomerReason(code),
			Code: strconv.FormatInt(code, 10), Message: msg}
	}
	return miniprogramError(api, 0, "", err)
}

// silenceperMessage builds silenceper's message for m.
func silenceperMessage(m customerservice.Outbound) (*message.CustomerMessage, error) {
	switch m.Type {
	case customerservice.TypeText:
		return message.NewCustomerTextMessage(m.To, m.Content), nil
	case customerservice.TypeImage:
		return message.NewCustomerImgMessage(m.To, m.MediaID), nil
	case customerservice.TypeLink:
		return message.NewCustomerLinkMessage(m.To, m.Title, m.Description, m.URL, m.ThumbURL), nil
	case customerservice.TypeMiniProgramPage:
		return message.NewCustomerMiniprogrampageMessage(m.To, m.Title, m.PagePath, m.ThumbMediaID), nil
	}
	return nil, fmt.Errorf("unknown message type %q", m.Type)
}

// sourceToken is the access-token handle silenceper's customer-message
// manager reads (it takes no context), backed by the app's shared
// TokenSource and carrying the context of the call it serves. It
// remembers the token it handed out; once stale is set to it, the next
// read asks the source for a refreshed token instead.
type sourceToken struct {
	ctx   context.Context
	src   adapters.TokenSource
	stale string
	used  string
	err   error
}

var _ credential.AccessTokenContextHandle = (*sourceToken)(nil)

// GetAccessToken implements credential.AccessTokenHandle.
func (h *sourceToken) GetAccessToken() (string, error) { return h.GetAccessTokenContext(h.ctx) }

// GetAccessTokenContext implements credential.AccessTokenContextHandle.
func (h *sourceToken) GetAccessTokenContext(ctx context.Context) (string, error) {
	if h.stale != "" {
		h.used, h.err = h.src.Refresh(ctx, h.stale)
	} else {
		h.used, h.err = h.src.Token(ctx)
	}
	return h.used, h.err
}
