// Package wechat is minigate's adapter for the WeChat mini-program platform:
// login (jscode2session) and phone numbers through silenceper/wechat, the
// stable access token, and the message-push protocol (signature,
// msg_signature, AES-256-CBC, XML and JSON), which the QQ adapter reuses
// through MessageCodec. WeChat Pay lives in this package too (pay*.go).
//
// silenceper reaches api.weixin.qq.com through process-wide hooks, so one
// process talks to one WeChat endpoint; New refuses a second, different one.
package wechat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/miniprogram/auth"
	"github.com/silenceper/wechat/v2/miniprogram/business"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	mpcontext "github.com/silenceper/wechat/v2/miniprogram/context"
	"github.com/silenceper/wechat/v2/util"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/sessions"
)

// miniprogramPlatform is the Platform of mini-program PlatformErrors and
// metrics.
const miniprogramPlatform = "wechat"

// API names used in PlatformErrors and metrics.
const (
	apiJSCode2Session = "jscode2session"
	apiPhoneNumber    = "getuserphonenumber"
	apiStableToken    = "stable_token"
)

// Client is one WeChat mini-program's server-side API client. It implements
// sessions.Authenticator and sessions.PhoneNumberer.
type Client struct {
	app     *config.App
	mp      *mpconfig.Config
	tokens  adapters.TokenSource
	timeout time.Duration
}

var (
	_ sessions.Authenticator = (*Client)(nil)
	_ sessions.PhoneNumberer = (*Client)(nil)
)

// New returns the mini-program client for app. It points silenceper at
// opts.Endpoints.WeChatAPI; it fails when this process already talks to a
// different WeChat endpoint. opts.Tokens is needed by PhoneNumber only.
func New(app *config.App, opts adapters.Options) (*Client, error) {
	if app == nil || app.AppID == "" || app.AppSecret == "" {
		return nil, errors.New("wechat: new client: app_id and app_secret are required")
	}
	timeout := miniprogramTimeout(opts)
	if err := useMiniprogramEndpoint(opts.Endpoints.WeChatAPI, timeout); err != nil {
		return nil, fmt.Errorf("wechat: app %q: %w", app.ID, err)
	}
	return &Client{
		app:     app,
		mp:      &mpconfig.Config{AppID: app.AppID, AppSecret: app.AppSecret},
		tokens:  opts.Tokens,
		timeout: timeout,
	}, nil
}

func miniprogramTimeout(opts adapters.Options) time.Duration {
	if opts.Timeout > 0 {
		return opts.Timeout
	}
	return config.DefaultUpstreamTimeout
}

// Code2Session exchanges a wx.login code for the user's openid, unionid and
// session_key (GET /sns/jscode2session).
func (c *Client) Code2Session(ctx context.Context, code string) (sessions.Login, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	a := auth.NewAuth(&mpcontext.Context{Config: c.mp})
	// silenceper formats the code into the URL unescaped; escape it so a
	// crafted code cannot add query parameters.
	res, err := a.Code2SessionContext(ctx, url.QueryEscape(code))
	err = miniprogramError(apiJSCode2Session, res.ErrCode, res.ErrMsg, err)
	if err == nil && (res.OpenID == "" || res.SessionKey == "") {
		err = &adapters.PlatformError{Platform: miniprogramPlatform, API: apiJSCode2Session,
			Reason: adapters.ReasonBadResponse, Message: "no openid or session_key in the answer"}
	}
	adapters.Observe(miniprogramPlatform, apiJSCode2Session, start, err)
	if err != nil {
		return sessions.Login{}, fmt.Errorf("wechat: code2session: %w", err)
	}
	return sessions.Login{OpenID: res.OpenID, UnionID: res.UnionID, SessionKey: res.SessionKey}, nil
}

// PhoneNumber resolves a getPhoneNumber code (POST
// /wxa/business/getuserphonenumber). When WeChat says the access token is
// invalid it asks the token source for a new one, once, and retries once.
func (c *Client) PhoneNumber(ctx context.Context, code string) (sessions.Phone, error) {
	if c.tokens == nil {
		return sessions.Phone{}, errors.New("wechat: phone number: no access token source configured")
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return sessions.Phone{}, fmt.Errorf("wechat: phone number: access token: %w", err)
	}
	phone, err := c.phoneNumberWith(ctx, tok, code)
	if adapters.HasReason(err, adapters.ReasonInvalidToken) {
		tok, err = c.tokens.Refresh(ctx, tok)
		if err != nil {
			return sessions.Phone{}, fmt.Errorf("wechat: phone number: refresh access token: %w", err)
		}
		phone, err = c.phoneNumberWith(ctx, tok, code)
	}
	if err != nil {
		return sessions.Phone{}, fmt.Errorf("wechat: phone number: %w", err)
	}
	return phone, nil
}

func (c *Client) phoneNumberWith(ctx context.Context, token, code string) (sessions.Phone, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	b := business.NewBusiness(&mpcontext.Context{Config: c.mp, AccessTokenContextHandle: fixedAccessToken(token)})
	info, err := b.GetPhoneNumberWithContext(ctx, &business.GetPhoneNumberRequest{Code: code})
	var ce *util.CommonError
	var errCode int64
	var errMsg string
	if errors.As(err, &ce) {
		errCode, errMsg = ce.ErrCode, ce.ErrMsg
	}
	err = miniprogramError(apiPhoneNumber, errCode, errMsg, err)
	if err == nil {
		switch {
		case info.PhoneNumber == "":
			err = &adapters.PlatformError{Platform: miniprogramPlatform, API: apiPhoneNumber,
				Reason: adapters.ReasonBadResponse, Message: "no phone number in the answer"}
		case info.Watermark.AppID != c.app.AppID:
			err = &adapters.PlatformError{Platform: miniprogramPlatform, API: apiPhoneNumber,
				Reason: adapters.ReasonBadResponse, Message: "watermark app id is not this app's"}
		}
	}
	adapters.Observe(miniprogramPlatform, apiPhoneNumber, start, err)
	if err != nil {
		return sessions.Phone{}, err
	}
	return sessions.Phone{PhoneNumber: info.PhoneNumber, PurePhoneNumber: info.PurePhoneNumber, CountryCode: info.CountryCode}, nil
}

// fixedAccessToken hands silenceper the one token a call was made with, so
// the caller knows which token to report as stale.
type fixedAccessToken string

var _ credential.AccessTokenContextHandle = fixedAccessToken("")

func (t fixedAccessToken) GetAccessToken() (string, error) { return string(t), nil }

func (t fixedAccessToken) GetAccessTokenContext(context.Context) (string, error) {
	return string(t), nil
}

// miniprogramHooks records the endpoint silenceper's process-wide hooks were
// pointed at.
var miniprogramHooks struct {
	mu        sync.Mutex
	installed bool
	base      string
}

// useMiniprogramEndpoint installs silenceper's HTTP client and URI rewriter
// for base (the configured wechat_api) once per process. A later call with
// the same base is a no-op; a different base is an error, because the hooks
// are global and re-pointing them would silently move every other app.
func useMiniprogramEndpoint(base string, timeout time.Duration) error {
	base = strings.TrimRight(base, "/")
	if base == "" {
		base = config.DefaultWeChatAPI
	}
	if _, err := url.Parse(base); err != nil {
		return fmt.Errorf("endpoints.wechat_api %q: %w", base, err)
	}
	miniprogramHooks.mu.Lock()
	defer miniprogramHooks.mu.Unlock()
	if miniprogramHooks.installed {
		if miniprogramHooks.base != base {
			return fmt.Errorf("this process already talks to WeChat at %s; cannot also use %s "+
				"(silenceper's endpoint hook is process-wide)", miniprogramHooks.base, base)
		}
		return nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	util.DefaultHTTPClient = &http.Client{Timeout: timeout, Transport: transport}
	if base != config.DefaultWeChatAPI {
		util.SetURIModifier(rewriteMiniprogramURI(base))
	}
	miniprogramHooks.installed, miniprogramHooks.base = true, base
	return nil
}

// rewriteMiniprogramURI returns a URI modifier that replaces the
// https://api.weixin.qq.com prefix with base and leaves other URIs alone.
func rewriteMiniprogramURI(base string) util.URIModifier {
	return func(uri string) string {
		if rest, ok := strings.CutPrefix(uri, config.DefaultWeChatAPI); ok && (rest == "" || rest[0] == '/' || rest[0] == '?') {
			return base + rest
		}
		return uri
	}
}
