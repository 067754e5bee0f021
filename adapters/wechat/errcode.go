package wechat

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"

	"github.com/minigate/minigate/adapters"
)

// miniprogramReason maps a WeChat server-API errcode to a Reason.
func miniprogramReason(code int64) adapters.Reason {
	switch code {
	case 40029, 40163, 41008: // invalid code, code used, code missing
		return adapters.ReasonInvalidCode
	case 45011, 45009: // frequency limit, daily quota
		return adapters.ReasonRateLimited
	case 40226:
		return adapters.ReasonHighRisk
	case -1:
		return adapters.ReasonBusy
	case 40001, 40014, 42001:
		return adapters.ReasonInvalidToken
	case 40013, 40125, 40164: // bad appid, bad secret, caller IP not allowed
		return adapters.ReasonAuth
	case 40003:
		return adapters.ReasonInvalidOpenID
	case 45015:
		return adapters.ReasonWindowClosed
	case 45047:
		return adapters.ReasonQuotaExceeded
	case 40007:
		return adapters.ReasonNotFound
	case 40002, 41001, 41002, 44002, 47001:
		return adapters.ReasonInvalidRequest
	}
	return adapters.ReasonRejected
}

// miniprogramError turns the outcome of one silenceper call into a
// *adapters.PlatformError (nil when errCode is 0 and err is nil). errCode and
// errMsg come from the decoded answer's CommonError, which silenceper fills
// before it returns its formatted error. The platform's own message is kept;
// silenceper's error text is not, because it can contain the request URI
// with the app secret or access token in it.
func miniprogramError(api string, errCode int64, errMsg string, err error) error {
	if errCode != 0 {
		return &adapters.PlatformError{
			Platform: miniprogramPlatform, API: api, Reason: miniprogramReason(errCode),
			Code: strconv.FormatInt(errCode, 10), Message: errMsg,
		}
	}
	if err == nil {
		return nil
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return adapters.TransportError(miniprogramPlatform, api, redactTransportError(err))
	}
	return &adapters.PlatformError{Platform: miniprogramPlatform, API: api, Reason: adapters.ReasonBadResponse,
		Message: "unexpected answer (HTTP status other than 200 or not the expected JSON)"}
}

// redactTransportError drops the query (app secret, login code, access
// token) from the URL in a *url.Error, keeping its cause for errors.Is.
func redactTransportError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	redacted := ue.URL
	if u, perr := url.Parse(ue.URL); perr == nil {
		u.RawQuery, u.User, u.Fragment = "", nil, ""
		redacted = u.String()
	} else {
		redacted = "(unparsable URL)"
	}
	return &url.Error{Op: ue.Op, URL: redacted, Err: ue.Err}
}
