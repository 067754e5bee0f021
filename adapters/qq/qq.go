// Package qq is minigate's adapter for QQ mini-programs and QQ wallet
// (QQ钱包). No SDK exists for either, so the adapter is hand-written on
// net/http, encoding/json, encoding/xml and crypto/md5:
//
//   - Client: code2Session (sessions.Authenticator); QQ has no code-based
//     phone-number API, so PhoneNumber returns *adapters.UnsupportedError.
//   - NewTokenFetcher: getToken (accesstoken.Fetcher).
//   - NewMessageVerifier: message pushes, which QQ sends in WeChat's
//     message-push protocol (built on adapters/wechat's codec).
//   - Pay: QQ wallet unified order, query, close, refund, refund query and
//     payment notifications (orders.Payments), XML with the WeChat Pay v2
//     MD5 signature.
//
// Mini-program APIs are reached at Options.Endpoints.QQAPI
// (https://api.q.qq.com), QQ wallet at Options.Endpoints.QPayAPI
// (https://qpay.qq.com). The real wallet serves refunds from a second host,
// api.qpay.qq.com, which needs the merchant's client certificate: with the
// default endpoint minigate sends refunds there; with any other configured
// endpoint (the sandbox, a proxy) refunds go to that same base URL.
package qq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/sessions"
)

// Platform names used in PlatformErrors and metrics.
const (
	// PlatformQQ names the mini-program server APIs (api.q.qq.com).
	PlatformQQ = "qq"
	// PlatformQPay names QQ wallet (qpay.qq.com).
	PlatformQPay = "qpay"
)

// maxResponseBytes bounds every platform response minigate reads.
const maxResponseBytes = 1 << 20

// Client talks to the QQ mini-program server APIs for one app.
type Client struct {
	appID  string
	secret string
	base   string
	http   *http.Client
}

var (
	_ sessions.Authenticator = (*Client)(nil)
	_ sessions.PhoneNumberer = (*Client)(nil)
)

// New returns the QQ mini-program client for app.
func New(app *config.App, opts adapters.Options) (*Client, error) {
	if app == nil || app.AppID == "" || app.AppSecret == "" {
		return nil, errors.New("qq: app_id and app_secret are required")
	}
	return &Client{
		appID:  app.AppID,
		secret: app.AppSecret,
		base:   endpoint(opts.Endpoints.QQAPI, config.DefaultQQAPI),
		http:   newHTTPClient(opts.Timeout),
	}, nil
}

// Code2Session exchanges a qq.login code for the user's openid, unionid
// and session_key (GET /sns/jscode2session).
func (c *Client) Code2Session(ctx context.Context, code string) (login sessions.Login, err error) {
	const api = "jscode2session"
	start := time.Now()
	defer func() { adapters.Observe(PlatformQQ, api, start, err) }()
	if code == "" {
		return sessions.Login{}, &adapters.PlatformError{Platform: PlatformQQ, API: api,
			Reason: adapters.ReasonInvalidCode, Message: "empty code"}
	}
	q := url.Values{
		"appid":      {c.appID},
		"secret":     {c.secret},
		"js_code":    {code},
		"grant_type": {"authorization_code"},
	}
	var out struct {
		apiStatus
		OpenID     string `json:"openid"`
		SessionKey string `json:"session_key"`
		UnionID    string `json:"unionid"`
	}
	if err := getJSON(ctx, c.http, api, c.base+"/sns/jscode2session?"+q.Encode(), &out); err != nil {
		return sessions.Login{}, err
	}
	if out.ErrCode != 0 {
		return sessions.Login{}, out.platformError(api)
	}
	if out.OpenID == "" || out.SessionKey == "" {
		return sessions.Login{}, &adapters.PlatformError{Platform: PlatformQQ, API: api,
			Reason: adapters.ReasonBadResponse, Message: "response without openid or session_key"}
	}
	return sessions.Login{OpenID: out.OpenID, UnionID: out.UnionID, SessionKey: out.SessionKey}, nil
}

// PhoneNumber is unsupported: QQ has no API that resolves a getPhoneNumber
// code; QQ's getPhoneNumber hands the mini-program encryptedData and iv,
// which POST /v1/me/decrypt opens with the stored session_key.
func (c *Client) PhoneNumber(context.Context, string) (sessions.Phone, error) {
	return sessions.Phone{}, &adapters.UnsupportedError{Platform: PlatformQQ, Feature: "phone number by code"}
}

// apiStatus is the error part of every api.q.qq.com JSON answer.
type apiStatus struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// platformError maps a non-zero errcode to a PlatformError.
func (s apiStatus) platformError(api string) *adapters.PlatformError {
	return &adapters.PlatformError{
		Platform: PlatformQQ, API: api, Reason: errcodeReason(s.ErrCode),
		Code: strconv.Itoa(s.ErrCode), Message: s.ErrMsg,
	}
}

// errcodeReason classifies api.q.qq.com errcodes. QQ documents -1, 40029
// and 45011 for code2Session and -1, 40001, 40002, 40013 for getToken; the
// others are WeChat's codes, which QQ's API mirrors.
func errcodeReason(code int) adapters.Reason {
	switch code {
	case -1:
		return adapters.ReasonBusy
	case 40029, 40163:
		return adapters.ReasonInvalidCode
	case 45011:
		return adapters.ReasonRateLimited
	case 40226:
		return adapters.ReasonHighRisk
	case 40001, 40013, 40125:
		return adapters.ReasonAuth
	case 40014, 42001:
		return adapters.ReasonInvalidToken
	case 40002:
		return adapters.ReasonInvalidRequest
	case 45009:
		return adapters.ReasonQuotaExceeded
	}
	return adapters.ReasonRejected
}

// getJSON GETs u and decodes the JSON answer into out. Transport failures,
// non-200 statuses and undecodable bodies are PlatformErrors.
func getJSON(ctx context.Context, hc *http.Client, api, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("qq: %s: %w", api, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return adapters.TransportError(PlatformQQ, api, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return adapters.TransportError(PlatformQQ, api, err)
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(PlatformQQ, api, resp.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &adapters.PlatformError{Platform: PlatformQQ, API: api, Reason: adapters.ReasonBadResponse,
			HTTPStatus: resp.StatusCode, Message: "undecodable JSON response", Err: err}
	}
	return nil
}

// statusError classifies an unexpected HTTP status: 5xx means the platform
// is having trouble (retry), anything else is a response we cannot use.
func statusError(platform, api string, status int) *adapters.PlatformError {
	reason := adapters.ReasonBadResponse
	if status >= 500 {
		reason = adapters.ReasonBusy
	}
	return &adapters.PlatformError{Platform: platform, API: api, Reason: reason, HTTPStatus: status,
		Message: "unexpected HTTP status " + strconv.Itoa(status)}
}

// newHTTPClient returns the instrumented client without endpoint rewriting:
// this adapter builds its URLs from the configured endpoints itself.
func newHTTPClient(timeout time.Duration) *http.Client {
	// NewHTTPClient can only fail while parsing rewrite endpoints, and
	// none are given here.
	hc, _ := adapters.NewHTTPClient(timeout, "", "")
	return hc
}

// endpoint returns the configured base URL without a trailing slash.
func endpoint(configured, def string) string {
	if configured == "" {
		configured = def
	}
	return strings.TrimRight(configured, "/")
}
