// Package alipay is minigate's adapter for Alipay mini-programs, built on
// the smartwalle/alipay SDK (RSA2; public-key mode or public-key
// certificate mode, see cert.go):
//
//   - Client: alipay.system.oauth.token (sessions.Authenticator). Alipay has
//     no server API that turns a code into a phone number (my.getPhoneNumber
//     returns an encrypted response for the mini-program to pass on), so
//     PhoneNumber returns *adapters.UnsupportedError.
//   - Pay: alipay.trade.create / query / close / refund /
//     fastpay.refund.query and async notifications (orders.Payments).
//   - NewMessageVerifier: message notifications (webhooks.MessageVerifier).
//
// Every call goes to Options.Endpoints.AlipayGateway. Amounts cross the
// boundary as yuan strings made and parsed by internal/money. Request
// signatures are made and response signatures verified by the SDK;
// notifications are verified with the app's Alipay public key (or the
// Alipay certificate they name) before anything in them is read. When the app has messages.aes_key, API
// requests and responses use Alipay's content encryption (AES-CBC) too.
package alipay

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/smartwalle/alipay/v3"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/sessions"
)

// Platform names Alipay in PlatformErrors and metrics.
const Platform = "alipay"

// timeLayout is Alipay's wall-clock format, always Asia/Shanghai.
const timeLayout = "2006-01-02 15:04:05"

// maxMessageLen bounds the platform message copied into PlatformErrors
// (sub_msg can echo the whole signed request).
const maxMessageLen = 256

// shanghai is Asia/Shanghai, which has had no DST since 1991; a fixed zone
// avoids depending on the host's tz database.
var shanghai = time.FixedZone("CST", 8*3600)

// core is what every Alipay adapter type shares: the SDK client for one app.
type core struct {
	appID    string
	sdk      *alipay.Client
	verifier formVerifier
	now      func() time.Time
}

func newCore(app *config.App, opts adapters.Options) (core, error) {
	switch {
	case app == nil || app.AppID == "":
		return core{}, errors.New("alipay: app_id is required")
	case app.PrivateKey == nil:
		return core{}, fmt.Errorf("alipay: app %s: the application private key is required", app.ID)
	case app.AlipayCertMode() && (len(app.AlipayCerts) == 0 || len(app.AlipayRootCerts) == 0):
		return core{}, fmt.Errorf("alipay: app %s: certificate mode needs the Alipay certificate and the root bundle", app.ID)
	case !app.AlipayCertMode() && app.AlipayPublicKey == nil:
		return core{}, fmt.Errorf("alipay: app %s: the Alipay public key is required", app.ID)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = config.DefaultUpstreamTimeout
	}
	gateway := opts.Endpoints.AlipayGateway
	if gateway == "" {
		gateway = config.DefaultAlipayGateway
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// The gateway URL goes to the SDK as is, so no host rewriting is needed.
	hc, err := adapters.NewHTTPClient(timeout, "", "")
	if err != nil {
		return core{}, fmt.Errorf("alipay: %w", err)
	}
	sdk, err := newSDK(app, gateway, hc)
	if err != nil {
		return core{}, err
	}
	c := core{appID: app.AppID, sdk: sdk, now: opts.Clock()}
	if app.AlipayCertMode() {
		// The download call has its own client: its answer is not verified
		// by the SDK (the certificate in it is checked against the root),
		// and it must not wait on the answer-peeking transport.
		dlClient, err := adapters.NewHTTPClient(timeout, "", "")
		if err != nil {
			return core{}, fmt.Errorf("alipay: %w", err)
		}
		dl, err := newSDK(app, gateway, dlClient)
		if err != nil {
			return core{}, err
		}
		store := storeFor(app, dl, log)
		hc.Transport = &certPeek{next: hc.Transport, store: store}
		if err := store.attach(sdk); err != nil {
			return core{}, fmt.Errorf("alipay: app %s: alipay_cert_file: %w", app.ID, err)
		}
		c.verifier = certFormVerifier(store)
	} else {
		pubDER, err := x509.MarshalPKIXPublicKey(app.AlipayPublicKey)
		if err != nil {
			return core{}, fmt.Errorf("alipay: app %s: Alipay public key: %w", app.ID, err)
		}
		if err := sdk.LoadAliPayPublicKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))); err != nil {
			return core{}, fmt.Errorf("alipay: app %s: Alipay public key: %w", app.ID, err)
		}
		c.verifier = keyFormVerifier(app.AlipayPublicKey)
	}
	if app.Messages.AESKey != "" {
		if err := sdk.SetEncryptKey(app.Messages.AESKey); err != nil {
			return core{}, fmt.Errorf("alipay: app %s: messages.aes_key: %w", app.ID, err)
		}
	}
	return c, nil
}

// newSDK builds an SDK client for app that sends requests to gateway
// through hc. It is built in the SDK's sandbox mode, which only means it
// never downloads Alipay certificates on its own (see certStore); the
// gateway is the configured one either way. In certificate mode the
// client sends app_cert_sn and alipay_root_cert_sn, which must be the
// serial numbers minigate computes.
func newSDK(app *config.App, gateway string, hc *http.Client) (*alipay.Client, error) {
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(app.PrivateKey)})
	sdk, err := alipay.New(app.AppID, string(privPEM), false,
		alipay.WithSandboxGateway(gateway), alipay.WithHTTPClient(hc), alipay.WithTimeLocation(shanghai))
	if err != nil {
		return nil, fmt.Errorf("alipay: app %s: private key: %w", app.ID, err)
	}
	if !app.AlipayCertMode() {
		return sdk, nil
	}
	if err := sdk.LoadAppCertPublicKey(certPEM(app.AppCert)); err != nil {
		return nil, fmt.Errorf("alipay: app %s: app_cert_file: %w", app.ID, err)
	}
	if err := sdk.LoadAliPayRootCert(certPEM(app.AlipayRootCerts...)); err != nil {
		return nil, fmt.Errorf("alipay: app %s: alipay_root_cert_file: %w", app.ID, err)
	}
	vs, err := sdk.URLValues(alipay.TradeQuery{})
	if err != nil {
		return nil, fmt.Errorf("alipay: app %s: sign: %w", app.ID, err)
	}
	// smartwalle counts only SHA1- and SHA256-with-RSA roots, Alipay's
	// SDKs every RSA root: the same for today's bundle, but a bundle where
	// they differ would be refused by the gateway.
	if got, want := vs.Get("alipay_root_cert_sn"), RootCertSN(app.AlipayRootCerts); got != want {
		return nil, fmt.Errorf("alipay: app %s: alipay_root_cert_file: the SDK computes alipay_root_cert_sn %q, Alipay's rule %q", app.ID, got, want)
	}
	if got, want := vs.Get("app_cert_sn"), CertSN(app.AppCert); got != want {
		return nil, fmt.Errorf("alipay: app %s: app_cert_file: the SDK computes app_cert_sn %q, Alipay's rule %q", app.ID, got, want)
	}
	return sdk, nil
}

// check turns a call's outcome into minigate's error. rsp is the SDK's
// response envelope (nil when the call failed before one was decoded);
// success is code 10000, or for the login API (whose successful answer
// carries no code) an empty code. Callers record the final error with
// adapters.Observe.
func check(api string, err error, rsp *alipay.Error, noCodeOK bool) error {
	switch {
	case err != nil:
		return classify(api, err)
	case rsp == nil:
		return badResponse(api, "empty response", nil)
	case rsp.Code == alipay.CodeSuccess || (noCodeOK && rsp.Code == ""):
		return nil
	}
	return platformError(api, rsp)
}

// guard runs an SDK call and turns a panic inside it into an error: the
// SDK's AES decryption panics on a response ciphertext that is not whole
// blocks.
func guard(call func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("alipay: sdk: %v", r)
		}
	}()
	return call()
}

// envelopeOf returns get() when there is a response: the SDK leaves the
// response nil when a call fails, and when the body is JSON null.
func envelopeOf(have bool, get func() *alipay.Error) *alipay.Error {
	if !have {
		return nil
	}
	return get()
}

// classify maps an error from the SDK: no HTTP answer → timeout or
// unreachable; an Alipay error envelope → its code; anything else (bad
// JSON, a response signature that does not verify, an unsigned success) →
// bad_response.
func classify(api string, err error) error {
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) {
		return adapters.TransportError(Platform, api, err)
	}
	var ae *alipay.Error
	if errors.As(err, &ae) {
		// The SDK returns a nil *Error for a "null" response body, and an
		// unsigned response (which it does not verify) as an *Error too:
		// neither is a trustworthy answer.
		if ae == nil {
			return badResponse(api, "empty response", nil)
		}
		if ae.Code == alipay.CodeSuccess || ae.Code == "" {
			return badResponse(api, "unsigned response", nil)
		}
		return platformError(api, ae)
	}
	if errors.Is(err, alipay.ErrAliPublicKeyNotFound) {
		return badResponse(api, "the answer is signed with an Alipay certificate (alipay_cert_sn) minigate does not trust", err)
	}
	if errors.Is(err, rsa.ErrVerification) {
		return badResponse(api, "the response signature does not verify with the Alipay public key", err)
	}
	return badResponse(api, "undecodable response", err)
}

func badResponse(api, msg string, err error) *adapters.PlatformError {
	return &adapters.PlatformError{Platform: Platform, API: api, Reason: adapters.ReasonBadResponse, Message: msg, Err: err}
}

// authSubCodes are gateway refusals of minigate's own credentials.
var authSubCodes = map[string]bool{
	"isv.invalid-signature":            true,
	"isv.missing-signature":            true,
	"isv.invalid-signature-type":       true,
	"isv.invalid-app-id":               true,
	"isv.invalid-encrypt":              true,
	"isv.decryption-error":             true,
	"isv.insufficient-isv-permissions": true,
	// Certificate mode: app_cert_sn or alipay_root_cert_sn is not the
	// app's (the sub_codes developers report; not documented).
	"isv.app-cert-not-exist":          true,
	"isv.invalid-alipay-root-cert-sn": true,
}

// codeSubCodes say a login code is invalid, expired or already used.
var codeSubCodes = map[string]bool{
	"isv.code-invalid":      true,
	"isv.code-expired":      true,
	"isv.code-used":         true,
	"isv.invalid-auth-code": true,
}

// conflictSubCodes are trade states that forbid the call.
var conflictSubCodes = map[string]bool{
	"ACQ.TRADE_HAS_SUCCESS":          true,
	"ACQ.TRADE_HAS_CLOSE":            true,
	"ACQ.TRADE_STATUS_ERROR":         true,
	"ACQ.TRADE_HAS_FINISHED":         true,
	"ACQ.CONTEXT_INCONSISTENT":       true, // same out_trade_no, other parameters
	"ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": true, // refunds would exceed the total
	"ACQ.DISCORDANT_REPEAT_REQUEST":  true, // same out_request_no, other amount
}

// platformError maps Alipay's code and sub_code to a PlatformError.
func platformError(api string, e *alipay.Error) *adapters.PlatformError {
	msg := e.SubMsg
	if msg == "" {
		msg = e.Msg
	}
	if len(msg) > maxMessageLen {
		msg = strings.ToValidUTF8(msg[:maxMessageLen], "") + "…"
	}
	pe := &adapters.PlatformError{Platform: Platform, API: api, Code: string(e.Code), SubCode: e.SubCode, Message: msg, Reason: adapters.ReasonRejected}
	switch {
	case e.Code == alipay.CodeUnknowError || e.SubCode == "ACQ.SYSTEM_ERROR" || strings.HasPrefix(e.SubCode, "isp."):
		pe.Reason = adapters.ReasonBusy
	case codeSubCodes[e.SubCode]:
		pe.Reason = adapters.ReasonInvalidCode
	case authSubCodes[e.SubCode] || e.Code == alipay.CodeInvalidAuthToken || e.Code == alipay.CodePermissionDenied:
		pe.Reason = adapters.ReasonAuth
	case e.SubCode == "ACQ.TRADE_NOT_EXIST":
		pe.Reason = adapters.ReasonNotFound
	case conflictSubCodes[e.SubCode]:
		pe.Reason = adapters.ReasonConflict
	case e.Code == alipay.CodeCallLimited:
		pe.Reason = adapters.ReasonRateLimited
	case e.Code == alipay.CodeMissingParam || e.Code == alipay.CodeInvalidParam:
		pe.Reason = adapters.ReasonInvalidRequest
	}
	return pe
}

// Client logs Alipay users in for one app.
type Client struct {
	core
}

var (
	_ sessions.Authenticator = (*Client)(nil)
	_ sessions.PhoneNumberer = (*Client)(nil)
)

// New returns the Alipay login client for app.
func New(app *config.App, opts adapters.Options) (*Client, error) {
	c, err := newCore(app, opts)
	if err != nil {
		return nil, err
	}
	return &Client{core: c}, nil
}

// Code2Session exchanges an my.getAuthCode code for the user's identity
// (alipay.system.oauth.token, grant_type authorization_code). OpenID is the
// open_id when Alipay returns one (newer apps), else the user_id. The
// access and refresh tokens are not kept: minigate needs only the identity.
func (c *Client) Code2Session(ctx context.Context, code string) (login sessions.Login, err error) {
	const api = "alipay.system.oauth.token"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	if code == "" {
		return login, &adapters.PlatformError{Platform: Platform, API: api, Reason: adapters.ReasonInvalidCode, Message: "empty code"}
	}
	var rsp *alipay.SystemOauthTokenRsp
	err = guard(func() (err error) {
		rsp, err = c.sdk.SystemOauthToken(ctx, alipay.SystemOauthToken{GrantType: "authorization_code", Code: code})
		return err
	})
	if err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), true); err != nil {
		return login, err
	}
	if rsp.UserId == "" && rsp.OpenId == "" {
		return login, badResponse(api, "neither user_id nor open_id in the answer", nil)
	}
	login = sessions.Login{OpenID: rsp.OpenId, AlipayUserID: rsp.UserId}
	if login.OpenID == "" {
		login.OpenID = rsp.UserId
	}
	return login, nil
}

// PhoneNumber is unsupported: Alipay has no code-based phone number API.
func (c *Client) PhoneNumber(context.Context, string) (sessions.Phone, error) {
	return sessions.Phone{}, &adapters.UnsupportedError{Platform: Platform, Feature: "phone numbers from a code"}
}
