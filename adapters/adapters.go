// Package adapters holds what the platform adapters (adapters/wechat,
// adapters/qq, adapters/alipay) share: the typed PlatformError every adapter
// returns, the unsupported-feature error, an instrumented HTTP client that
// reaches configurable endpoints, and platform-call metrics.
//
// Adapters translate between minigate's domain types and a platform's API;
// they never touch the database. Domain packages (sessions, orders, …) own
// the interfaces the adapters implement.
package adapters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minigate/minigate/internal/apperr"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/metrics"
)

// Reason classifies a platform failure independently of the platform's own
// codes, so domain packages can branch without knowing every platform.
type Reason string

// Reasons an adapter assigns to PlatformErrors.
const (
	ReasonInvalidCode    Reason = "invalid_code"   // login code invalid, expired or used
	ReasonRateLimited    Reason = "rate_limited"   // platform frequency limit
	ReasonHighRisk       Reason = "high_risk_user" // platform refuses this user
	ReasonBusy           Reason = "platform_busy"  // platform asks to retry (-1, SYSTEM_ERROR, 20000)
	ReasonUnreachable    Reason = "platform_unreachable"
	ReasonTimeout        Reason = "platform_timeout"
	ReasonInvalidToken   Reason = "invalid_token"   // access token invalid/expired: refresh and retry once
	ReasonAuth           Reason = "platform_auth"   // our credentials are wrong (secret, signature)
	ReasonInvalidRequest Reason = "invalid_request" // the platform rejected our parameters
	ReasonNotFound       Reason = "not_found"       // order/refund/media unknown to the platform
	ReasonConflict       Reason = "conflict"        // state conflict at the platform (already paid, closed, …)
	ReasonInvalidOpenID  Reason = "invalid_openid"
	ReasonWindowClosed   Reason = "reply_window_closed"
	ReasonQuotaExceeded  Reason = "reply_quota_exceeded"
	ReasonRejected       Reason = "rejected" // any other business refusal
	ReasonBadResponse    Reason = "bad_response"
	// ReasonSessionKeyExpired: the user's session_key is unknown to the
	// platform or expired (WeChat calls signed with it); the user must log
	// in again.
	ReasonSessionKeyExpired Reason = "session_key_expired"
	// ReasonInsufficientFunds: the user's balance (coins) is too low.
	ReasonInsufficientFunds Reason = "insufficient_funds"
)

// PlatformError is a failed platform call.
type PlatformError struct {
	Platform   string // wechat, wechatpay, qq, qpay, alipay
	API        string // e.g. jscode2session, jsapi_prepay, alipay.trade.create
	Reason     Reason
	HTTPStatus int    // 0 when no HTTP response
	Code       string // the platform's code (errcode, code, sub_code owner)
	SubCode    string
	Message    string
	Err        error // transport cause, if any
}

func (e *PlatformError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", e.Platform, e.API, e.Reason)
	if e.Code != "" {
		fmt.Fprintf(&b, " (code %s", e.Code)
		if e.SubCode != "" {
			fmt.Fprintf(&b, "/%s", e.SubCode)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the transport cause.
func (e *PlatformError) Unwrap() error { return e.Err }

// Retryable reports whether the same call may succeed if repeated.
func (e *PlatformError) Retryable() bool {
	switch e.Reason {
	case ReasonBusy, ReasonUnreachable, ReasonTimeout, ReasonInvalidToken:
		return true
	}
	return false
}

// AppError maps the failure to the API error a client sees, using the
// generic meaning of its Reason. Domain packages may map specific reasons
// differently before falling back to this.
func (e *PlatformError) AppError() *apperr.Error {
	kind, code, msg := apperr.Rejected, "platform_rejected", "the platform rejected the request"
	switch e.Reason {
	case ReasonInvalidCode:
		kind, code, msg = apperr.Invalid, "invalid_code", "the login code is invalid, expired or already used"
	case ReasonRateLimited:
		kind, code, msg = apperr.RateLimited, "rate_limited", "the platform's rate limit was hit; retry later"
	case ReasonHighRisk:
		kind, code, msg = apperr.Forbidden, "high_risk_user", "the platform refuses this user"
	case ReasonBusy:
		kind, code, msg = apperr.Unavailable, "platform_busy", "the platform is busy; retry"
	case ReasonUnreachable, ReasonBadResponse:
		kind, code, msg = apperr.Unavailable, "platform_unavailable", "the platform could not be reached; retry"
	case ReasonTimeout:
		kind, code, msg = apperr.Timeout, "platform_timeout", "the platform did not answer in time; retry"
	case ReasonInvalidToken, ReasonAuth:
		kind, code, msg = apperr.Unavailable, "platform_auth_failed", "the platform refused minigate's credentials"
	case ReasonNotFound:
		kind, code, msg = apperr.NotFound, "platform_not_found", "the platform does not know this object"
	case ReasonConflict:
		kind, code, msg = apperr.Conflict, "platform_conflict", "the platform's state conflicts with the request"
	case ReasonInvalidOpenID:
		kind, code, msg = apperr.Invalid, "invalid_openid", "the platform does not know this openid"
	case ReasonWindowClosed:
		kind, code, msg = apperr.Conflict, "reply_window_closed", "the platform's reply window for this user is closed"
	case ReasonQuotaExceeded:
		kind, code, msg = apperr.RateLimited, "reply_quota_exceeded", "the reply quota for this user is used up"
	case ReasonInvalidRequest:
		kind, code, msg = apperr.Rejected, "platform_invalid_request", "the platform rejected the request's parameters"
	case ReasonSessionKeyExpired:
		kind, code, msg = apperr.Conflict, "session_key_expired", "the user's login has expired at the platform: log in again (wx.login and POST /v1/apps/{app}/sessions), then retry"
	case ReasonInsufficientFunds:
		kind, code, msg = apperr.Conflict, "insufficient_balance", "the user's balance is too low"
	}
	ae := apperr.Wrap(e, kind, code, msg).WithDetail("platform", e.Platform)
	if e.Code != "" {
		ae = ae.WithDetail("platform_code", e.Code)
	}
	if e.SubCode != "" {
		ae = ae.WithDetail("platform_sub_code", e.SubCode)
	}
	if e.Message != "" {
		ae = ae.WithDetail("platform_message", e.Message)
	}
	return ae
}

// AsPlatformError returns the *PlatformError in err's chain, if any.
func AsPlatformError(err error) (*PlatformError, bool) {
	var pe *PlatformError
	ok := errors.As(err, &pe)
	return pe, ok
}

// HasReason reports whether err is a PlatformError with the given reason.
func HasReason(err error, r Reason) bool {
	pe, ok := AsPlatformError(err)
	return ok && pe.Reason == r
}

// UnsupportedError says a platform does not offer a feature.
type UnsupportedError struct {
	Platform string
	Feature  string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s does not support %s", e.Platform, e.Feature)
}

// AppError maps to 501 unsupported_by_platform.
func (e *UnsupportedError) AppError() *apperr.Error {
	return apperr.Wrap(e, apperr.Unsupported, "unsupported_by_platform", e.Error()).
		WithDetail("platform", e.Platform).WithDetail("feature", e.Feature)
}

// ToAppError converts adapter errors (PlatformError, UnsupportedError) in
// err's chain to API errors, and leaves other errors unchanged.
func ToAppError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := apperr.As(err); ok {
		return err
	}
	if pe, ok := AsPlatformError(err); ok {
		return pe.AppError()
	}
	var ue *UnsupportedError
	if errors.As(err, &ue) {
		return ue.AppError()
	}
	return err
}

// TransportError classifies an error from an HTTP round trip (no response)
// as a PlatformError with reason timeout or unreachable.
func TransportError(platform, api string, err error) *PlatformError {
	reason := ReasonUnreachable
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		reason = ReasonTimeout
	}
	return &PlatformError{Platform: platform, API: api, Reason: reason, Err: err}
}

// Observe records one platform call's outcome and latency. Call it with the
// call's final error (nil for success).
func Observe(platform, api string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
		if pe, ok := AsPlatformError(err); ok {
			switch pe.Reason {
			case ReasonTimeout:
				outcome = "timeout"
			case ReasonUnreachable:
				outcome = "unreachable"
			default:
				outcome = "platform_error"
			}
		}
	}
	metrics.PlatformCalls.WithLabelValues(platform, api, outcome).Inc()
	metrics.PlatformDuration.WithLabelValues(platform, api).Observe(time.Since(start).Seconds())
}

// NewHTTPClient returns a client with the given per-request timeout whose
// requests to the host of from are sent to the base URL to instead (scheme,
// host and path prefix). SDKs with fixed platform hosts use it to reach a
// configured endpoint such as the sandbox. from == to (or empty) disables
// rewriting.
func NewHTTPClient(timeout time.Duration, from, to string) (*http.Client, error) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	var rt http.RoundTripper = base
	if from != "" && to != "" && strings.TrimRight(from, "/") != strings.TrimRight(to, "/") {
		f, err := url.Parse(from)
		if err != nil {
			return nil, fmt.Errorf("adapters: endpoint %q: %w", from, err)
		}
		t, err := url.Parse(strings.TrimRight(to, "/"))
		if err != nil {
			return nil, fmt.Errorf("adapters: endpoint %q: %w", to, err)
		}
		rt = &rewriter{next: base, fromHost: f.Host, to: t}
	}
	return &http.Client{Timeout: timeout, Transport: rt}, nil
}

type rewriter struct {
	next     http.RoundTripper
	fromHost string
	to       *url.URL
}

func (r *rewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != r.fromHost {
		return r.next.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = r.to.Scheme
	out.URL.Host = r.to.Host
	out.URL.Path = r.to.Path + req.URL.Path
	if req.URL.RawPath != "" {
		out.URL.RawPath = r.to.Path + req.URL.RawPath
	}
	out.Host = r.to.Host
	return r.next.RoundTrip(out)
}

// TokenSource hands adapters a valid access token for their app. It is
// implemented by internal/accesstoken (shared through Postgres).
type TokenSource interface {
	// Token returns a valid token.
	Token(ctx context.Context) (string, error)
	// Refresh is called after the platform rejected stale as invalid; it
	// returns a new token (refreshing at the platform at most once, however
	// many callers report the same stale token).
	Refresh(ctx context.Context, stale string) (string, error)
}

// SessionKeys hands adapters the session_key of a user's latest login, for
// platform calls signed with it (WeChat virtual payment). It is implemented
// by sessions.KeyReader; the key never leaves the server.
type SessionKeys interface {
	// SessionKey returns the session_key of openID's latest login to app
	// (minigate app id). When none is stored, or it cannot be opened, the
	// error wraps ErrNoSessionKey.
	SessionKey(ctx context.Context, app, openID string) (string, error)
}

// ErrNoSessionKey says no usable session_key is stored for a user: the user
// must log in again. Adapters report it as a PlatformError with Reason
// session_key_expired.
var ErrNoSessionKey = errors.New("no usable session_key is stored for the user")

// Options are what every adapter constructor takes besides its app's config:
//
//	wechat.New(app, opts) / qq.New(app, opts) / alipay.New(app, opts)   sessions.Authenticator, sessions.PhoneNumberer
//	wechat.NewTokenFetcher(app, opts) / qq.NewTokenFetcher(app, opts)   accesstoken.Fetcher
//	wechat.NewMessageVerifier(app, opts) / qq… / alipay…                 webhooks.MessageVerifier
//	wechat.NewPay(app, opts) / qq.NewPay(app, opts) / alipay.NewPay(app, opts)  orders.Payments
type Options struct {
	// Endpoints are the platforms' base URLs.
	Endpoints config.Endpoints
	// Timeout bounds each platform call.
	Timeout time.Duration
	// Tokens supplies access tokens (WeChat/QQ calls that need one).
	Tokens TokenSource
	// SessionKeys supplies users' session keys (WeChat virtual payment).
	SessionKeys SessionKeys
	// CallbackWindow is how far a callback's timestamp may be from now.
	CallbackWindow time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger for adapter diagnostics (never secrets).
	Logger *slog.Logger
}

// Clock returns o.Now or time.Now.
func (o Options) Clock() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}
