package app

import (
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/adapters/wechat"
	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/internal/accesstoken"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/sessions"
	"github.com/minigate/minigate/webhooks"
)

// Platform holds one configured app's adapters, one field per domain
// interface. buildPlatforms fills them explicitly, per platform: this is the
// only place that knows which adapter serves which app.
type Platform struct {
	App *config.App
	// Messages verifies and opens message pushes; nil when the app has no
	// message push settings.
	Messages webhooks.MessageVerifier
	// Login exchanges login codes for identities.
	Login sessions.Authenticator
	// Phone resolves getPhoneNumber codes (platforms without it return
	// *adapters.UnsupportedError).
	Phone sessions.PhoneNumberer
	// Tokens supplies the app's access token, shared by every instance
	// through Postgres (WeChat, QQ); nil for Alipay.
	Tokens adapters.TokenSource
	// Payments is the merchant channel (prepay, query, close, refund);
	// nil for WeChat/QQ apps without a pay section.
	Payments orders.Payments
	// PaymentNotifications verifies and opens the same channel's payment
	// and refund notifications (the same adapter as Payments); nil when
	// Payments is.
	PaymentNotifications orders.PaymentNotifications
	// CustomerService sends customer-service messages, typing and media
	// (Alipay's answers 501).
	CustomerService customerservice.Platform
}

// buildPlatforms builds the adapters for every configured app. pool holds
// the access tokens shared by all instances; now is the clock (nil:
// time.Now).
func buildPlatforms(cfg *config.Config, pool *sqlx.DB, now func() time.Time, log *slog.Logger) (map[string]*Platform, error) {
	out := make(map[string]*Platform, len(cfg.Apps))
	tokens, err := accesstoken.NewManager(pool, accesstoken.Options{SecretKey: cfg.SecretKey, Now: now, Logger: log.With("component", "accesstoken")})
	if err != nil {
		return nil, err
	}
	for _, a := range cfg.Apps {
		p := &Platform{App: a}
		sessionOpts := adapters.Options{Endpoints: cfg.Endpoints, Timeout: cfg.Limits.UpstreamTimeout,
			CallbackWindow: cfg.Limits.CallbackWindow, Now: now, Logger: log}
		if err := sessionAdapters(p, tokens, sessionOpts); err != nil {
			return nil, err
		}
		var err error
		if p.Messages, err = messageVerifier(a, sessionOpts); err != nil {
			return nil, err
		}
		pay, err := payments(a, sessionOpts)
		if err != nil {
			return nil, err
		}
		if pay != nil {
			p.Payments, p.PaymentNotifications = pay, pay
		}
		if p.CustomerService, err = customerService(p, sessionOpts); err != nil {
			return nil, err
		}
		out[a.ID] = p
	}
	return out, nil
}

// messageVerifier builds app's message-push verifier: WeChat and QQ apps with
// a messages.token (QQ pushes in WeChat's protocol), and every Alipay app
// (its notifications are verified with the Alipay public key). It returns
// nil for apps without message push.
func messageVerifier(a *config.App, opts adapters.Options) (webhooks.MessageVerifier, error) {
	switch a.Platform {
	case config.WeChat:
		if a.Messages.Token != "" {
			return wechat.NewMessageVerifier(a, opts)
		}
	case config.QQ:
		if a.Messages.Token != "" {
			return qq.NewMessageVerifier(a, opts)
		}
	case config.Alipay:
		return alipay.NewMessageVerifier(a, opts)
	}
	return nil, nil
}

// sessionAdapters fills p's login, phone-number and access-token adapters.
func sessionAdapters(p *Platform, tokens *accesstoken.Manager, opts adapters.Options) error {
	a := p.App
	switch a.Platform {
	case config.WeChat:
		p.Tokens = tokens.Source(a.ID, wechat.NewTokenFetcher(a, opts))
		opts.Tokens = p.Tokens
		c, err := wechat.New(a, opts)
		if err != nil {
			return err
		}
		p.Login, p.Phone = c, c
	case config.QQ:
		p.Tokens = tokens.Source(a.ID, qq.NewTokenFetcher(a, opts))
		opts.Tokens = p.Tokens
		c, err := qq.New(a, opts)
		if err != nil {
			return err
		}
		p.Login, p.Phone = c, c
	case config.Alipay:
		c, err := alipay.New(a, opts)
		if err != nil {
			return err
		}
		p.Login, p.Phone = c, c
	}
	return nil
}

// payChannel is a payment adapter: the calls orders makes and the
// notifications the callback pipeline opens.
type payChannel interface {
	orders.Payments
	orders.PaymentNotifications
}

// payments builds app's payment channel: WeChat Pay and QQ wallet for apps
// with a pay section; Alipay for every Alipay app (its merchant is the app;
// pay.seller_id is optional).
func payments(a *config.App, opts adapters.Options) (payChannel, error) {
	switch {
	case a.Platform == config.Alipay:
		return alipay.NewPay(a, opts)
	case a.Pay == nil:
		return nil, nil
	case a.Platform == config.WeChat:
		return wechat.NewPay(a, opts)
	case a.Platform == config.QQ:
		return qq.NewPay(a, opts)
	}
	return nil, nil
}

// customerService builds p's customer-service API: WeChat through
// silenceper (typing and media hand-written), QQ in WeChat's protocol shape,
// Alipay unsupported. WeChat and QQ use the app's shared access token.
func customerService(p *Platform, opts adapters.Options) (customerservice.Platform, error) {
	opts.Tokens = p.Tokens
	switch p.App.Platform {
	case config.WeChat:
		return wechat.NewCustomerService(p.App, opts)
	case config.QQ:
		return qq.NewCustomerService(p.App, opts)
	case config.Alipay:
		return alipay.NewCustomerService(p.App, opts), nil
	}
	return nil, nil
}
