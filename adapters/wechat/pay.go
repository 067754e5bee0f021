package wechat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/jsapi"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/orders"
)

// PayPlatform is the platform name WeChat Pay errors and metrics carry.
const PayPlatform = "wechatpay"

// Limits WeChat Pay puts on JSAPI prepay fields.
const (
	// PayDescriptionMax is the longest description (in characters) WeChat
	// Pay accepts; longer ones are cut.
	PayDescriptionMax = 127
)

// payZone is China Standard Time, the zone of WeChat Pay's timestamps.
var payZone = time.FixedZone("CST", 8*3600)

// Pay is one app's WeChat Pay API v3 merchant, reached through wechatpay-go.
// It implements orders.Payments.
//
// Responses and notifications are verified by the SDK: with the WeChat Pay
// public key for its id when one is configured, and with platform
// certificates (downloaded from /v3/certificates on first need and again
// when an unknown serial appears) for any other serial. A merchant migrating
// from certificates to the public key is therefore served in both modes at
// once; a merchant without a public key uses certificates only.
type Pay struct {
	appID    string
	mchID    string
	apiV3Key string
	client   *core.Client
	jsapi    jsapi.JsapiApiService
	refunds  refunddomestic.RefundsApiService
	verifier auth.Verifier
	notify   *notify.Handler
	// publicKeyID is the configured WeChat Pay public key id ("" without one).
	publicKeyID string
	certs       *payCertStore
	window      time.Duration
	now         func() time.Time
}

var (
	_ orders.Payments             = (*Pay)(nil)
	_ orders.PaymentNotifications = (*Pay)(nil)
)

// NewPay builds the WeChat Pay adapter for app, which must have a pay
// section with mch_id, serial_no, the merchant private key and the APIv3
// key. It makes no network call: platform certificates are fetched when
// first needed.
func NewPay(app *config.App, opts adapters.Options) (*Pay, error) {
	if app == nil || app.Pay == nil {
		return nil, errors.New("wechat: pay: the app has no pay section")
	}
	pc := app.Pay
	switch {
	case pc.MchID == "":
		return nil, fmt.Errorf("wechat: pay: app %s: mch_id is required", app.ID)
	case pc.SerialNo == "":
		return nil, fmt.Errorf("wechat: pay: app %s: serial_no is required", app.ID)
	case pc.PrivateKey == nil:
		return nil, fmt.Errorf("wechat: pay: app %s: the merchant private key is required", app.ID)
	case len(pc.APIv3Key) != 32:
		return nil, fmt.Errorf("wechat: pay: app %s: api_v3_key must be 32 bytes", app.ID)
	case (pc.PublicKeyID == "") != (pc.PublicKey == nil):
		return nil, fmt.Errorf("wechat: pay: app %s: public_key_id and the public key go together", app.ID)
	}
	httpClient, err := adapters.NewHTTPClient(opts.Timeout, consts.WechatPayAPIServer, opts.Endpoints.WeChatPayAPI)
	if err != nil {
		return nil, fmt.Errorf("wechat: pay: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Pay{
		appID: app.AppID, mchID: pc.MchID, apiV3Key: pc.APIv3Key, publicKeyID: pc.PublicKeyID,
		window: opts.CallbackWindow, now: opts.Clock(),
	}
	if p.window <= 0 {
		p.window = config.DefaultCallbackWindow
	}
	credential := option.WithMerchantCredential(pc.MchID, pc.SerialNo, pc.PrivateKey)
	// The certificate downloader's own client: it cannot verify the first
	// download (it has no certificate yet; the certificates themselves are
	// authenticated by the APIv3 key's AES-GCM), and verifies later ones.
	dlClient, err := core.NewClient(context.Background(), credential, option.WithoutValidator(), option.WithHTTPClient(httpClient))
	if err != nil {
		return nil, fmt.Errorf("wechat: pay: certificate client: %w", err)
	}
	p.certs = newPayCertStore(dlClient, pc.APIv3Key, log)
	if pc.PublicKey != nil {
		p.verifier = verifiers.NewSHA256WithRSACombinedVerifier(p.certs, pc.PublicKeyID, *pc.PublicKey)
	} else {
		p.verifier = verifiers.NewSHA256WithRSAVerifier(p.certs)
	}
	p.client, err = core.NewClient(context.Background(), credential, option.WithVerifier(p.verifier), option.WithHTTPClient(httpClient))
	if err != nil {
		return nil, fmt.Errorf("wechat: pay: client: %w", err)
	}
	p.notify, err = notify.NewRSANotifyHandler(pc.APIv3Key, p.verifier)
	if err != nil {
		return nil, fmt.Errorf("wechat: pay: notification handler: %w", err)
	}
	p.jsapi = jsapi.JsapiApiService{Client: p.client}
	p.refunds = refunddomestic.RefundsApiService{Client: p.client}
	return p, nil
}

// Prepay creates a JSAPI order (POST /v3/pay/transactions/jsapi). The
// description is cut to PayDescriptionMax characters; ExpiresAt, when set,
// becomes time_expire in +08:00.
func (p *Pay) Prepay(ctx context.Context, req orders.PrepayRequest) (res orders.Prepay, err error) {
	const api = "jsapi_prepay"
	defer payObserve(api, time.Now(), &err)
	body := jsapi.PrepayRequest{
		Appid:       core.String(p.appID),
		Mchid:       core.String(p.mchID),
		Description: core.String(payTruncate(req.Description, PayDescriptionMax)),
		OutTradeNo:  core.String(req.OutTradeNo),
		NotifyUrl:   core.String(req.NotifyURL),
		Amount:      &jsapi.Amount{Total: core.Int64(req.Amount), Currency: core.String("CNY")},
		Payer:       &jsapi.Payer{Openid: core.String(req.Payer.OpenID)},
	}
	if !req.ExpiresAt.IsZero() {
		body.TimeExpire = core.Time(req.ExpiresAt.In(payZone).Truncate(time.Second))
	}
	if req.Attach != "" {
		body.Attach = core.String(req.Attach)
	}
	resp, _, err := p.jsapi.Prepay(ctx, body)
	if err != nil {
		return orders.Prepay{}, payError(api, err)
	}
	if resp.PrepayId == nil || *resp.PrepayId == "" {
		return orders.Prepay{}, payBadResponse(api, "no prepay_id")
	}
	return orders.Prepay{PrepayID: *resp.PrepayId}, nil
}

// PayParams signs fresh wx.requestPayment parameters for a prepay_id:
// appId, timeStamp, nonceStr, package and signType "RSA", with paySign the
// merchant's SHA256withRSA signature of "appId\ntimeStamp\nnonceStr\npackage\n".
// It makes no network call.
func (p *Pay) PayParams(ctx context.Context, pp orders.Prepay) (orders.PayParams, error) {
	if pp.PrepayID == "" {
		return nil, errors.New("wechat: pay params: empty prepay_id")
	}
	nonce, err := utils.GenerateNonce()
	if err != nil {
		return nil, fmt.Errorf("wechat: pay params: nonce: %w", err)
	}
	ts := strconv.FormatInt(p.now().Unix(), 10)
	pkg := "prepay_id=" + pp.PrepayID
	sig, err := p.client.Sign(ctx, p.appID+"\n"+ts+"\n"+nonce+"\n"+pkg+"\n")
	if err != nil {
		return nil, fmt.Errorf("wechat: pay params: sign: %w", err)
	}
	return orders.PayParams{
		"appId": p.appID, "timeStamp": ts, "nonceStr": nonce, "package": pkg,
		"signType": "RSA", "paySign": sig.Signature,
	}, nil
}

// Query returns the order as WeChat Pay sees it
// (GET /v3/pay/transactions/out-trade-no/{no}?mchid=…).
func (p *Pay) Query(ctx context.Context, outTradeNo string) (tx orders.Transaction, err error) {
	const api = "query_order"
	defer payObserve(api, time.Now(), &err)
	resp, _, err := p.jsapi.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{
		OutTradeNo: core.String(outTradeNo), Mchid: core.String(p.mchID),
	})
	if err != nil {
		return orders.Transaction{}, payError(api, err)
	}
	tx, err = payTransaction(resp)
	if err != nil {
		return orders.Transaction{}, payBadResponse(api, err.Error())
	}
	return tx, nil
}

// Close closes an unpaid order (POST …/out-trade-no/{no}/close → 204).
// Closing a closed order succeeds; closing a paid one is a conflict.
func (p *Pay) Close(ctx context.Context, outTradeNo string) (err error) {
	const api = "close_order"
	defer payObserve(api, time.Now(), &err)
	if _, err = p.jsapi.CloseOrder(ctx, jsapi.CloseOrderRequest{
		OutTradeNo: core.String(outTradeNo), Mchid: core.String(p.mchID),
	}); err != nil {
		return payError(api, err)
	}
	return nil
}

// Refund requests a refund (POST /v3/refund/domestic/refunds); the same
// OutRefundNo refunds at most once. The reason is cut to 80 characters, the
// platform's limit. The answer is usually PROCESSING
// (orders.RefundPending): the outcome arrives by notification or query.
func (p *Pay) Refund(ctx context.Context, req orders.RefundRequest) (r orders.Refund, err error) {
	const api = "refund"
	defer payObserve(api, time.Now(), &err)
	body := refunddomestic.CreateRequest{
		OutRefundNo: core.String(req.OutRefundNo),
		Amount: &refunddomestic.AmountReq{
			Refund: core.Int64(req.Amount), Total: core.Int64(req.Total), Currency: core.String("CNY"),
		},
	}
	if req.OutTradeNo != "" {
		body.OutTradeNo = core.String(req.OutTradeNo)
	} else {
		body.TransactionId = core.String(req.TransactionID)
	}
	if req.Reason != "" {
		body.Reason = core.String(payTruncate(req.Reason, 80))
	}
	if req.NotifyURL != "" {
		body.NotifyUrl = core.String(req.NotifyURL)
	}
	resp, _, err := p.refunds.Create(ctx, body)
	if err != nil {
		return orders.Refund{}, payError(api, err)
	}
	if r, err = payRefund(resp); err != nil {
		return orders.Refund{}, payBadResponse(api, err.Error())
	}
	return r, nil
}

// QueryRefund returns a refund's state (GET /v3/refund/domestic/refunds/{no}).
// A refund that belongs to another order than outTradeNo is not found.
func (p *Pay) QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (r orders.Refund, err error) {
	const api = "query_refund"
	defer payObserve(api, time.Now(), &err)
	resp, _, err := p.refunds.QueryByOutRefundNo(ctx, refunddomestic.QueryByOutRefundNoRequest{
		OutRefundNo: core.String(outRefundNo),
	})
	if err != nil {
		return orders.Refund{}, payError(api, err)
	}
	if r, err = payRefund(resp); err != nil {
		return orders.Refund{}, payBadResponse(api, err.Error())
	}
	if outTradeNo != "" && r.OutTradeNo != outTradeNo {
		return orders.Refund{}, &adapters.PlatformError{
			Platform: PayPlatform, API: api, Reason: adapters.ReasonNotFound,
			Message: "the refund belongs to another order",
		}
	}
	return r, nil
}

func payObserve(api string, start time.Time, err *error) {
	adapters.Observe(PayPlatform, api, start, *err)
}

// payTruncate cuts s to at most n characters.
func payTruncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}

// payTradeStates maps trade_state to the normalised payment state.
var payTradeStates = map[string]orders.PaymentState{
	"SUCCESS":    orders.PaymentPaid,
	"REFUND":     orders.PaymentRefunded,
	"NOTPAY":     orders.PaymentPending,
	"USERPAYING": orders.PaymentPending,
	"CLOSED":     orders.PaymentClosed,
	"REVOKED":    orders.PaymentClosed,
	"PAYERROR":   orders.PaymentFailed,
}

// payTransaction normalises a transaction from a query or a notification.
func payTransaction(t *payments.Transaction) (orders.Transaction, error) {
	if t == nil {
		return orders.Transaction{}, errors.New("empty transaction")
	}
	state, ok := payTradeStates[payStr(t.TradeState)]
	if !ok {
		return orders.Transaction{}, fmt.Errorf("unknown trade_state %q", payStr(t.TradeState))
	}
	tx := orders.Transaction{
		AppID: payStr(t.Appid), MchID: payStr(t.Mchid), OutTradeNo: payStr(t.OutTradeNo),
		TransactionID: payStr(t.TransactionId), State: state,
	}
	if t.Amount != nil {
		tx.Amount, tx.Currency = payInt(t.Amount.Total), payStr(t.Amount.Currency)
	}
	if t.Payer != nil {
		tx.PayerID = payStr(t.Payer.Openid)
	}
	if st := payStr(t.SuccessTime); st != "" {
		at, err := time.Parse(time.RFC3339, st)
		if err != nil {
			return orders.Transaction{}, fmt.Errorf("success_time %q: %w", st, err)
		}
		tx.PaidAt = at
	}
	if tx.OutTradeNo == "" {
		return orders.Transaction{}, errors.New("no out_trade_no")
	}
	return tx, nil
}

// payRefundStates maps a refund status to the normalised refund state.
var payRefundStates = map[string]orders.RefundState{
	"SUCCESS":    orders.RefundSucceeded,
	"PROCESSING": orders.RefundPending,
	"ABNORMAL":   orders.RefundFailed,
	"CLOSED":     orders.RefundFailed,
}

func payRefund(r *refunddomestic.Refund) (orders.Refund, error) {
	if r == nil || r.Status == nil {
		return orders.Refund{}, errors.New("refund without status")
	}
	state, ok := payRefundStates[string(*r.Status)]
	if !ok {
		return orders.Refund{}, fmt.Errorf("unknown refund status %q", *r.Status)
	}
	out := orders.Refund{
		OutTradeNo: payStr(r.OutTradeNo), TransactionID: payStr(r.TransactionId),
		OutRefundNo: payStr(r.OutRefundNo), RefundID: payStr(r.RefundId), State: state,
	}
	if r.Amount != nil {
		out.Amount, out.Total = payInt(r.Amount.Refund), payInt(r.Amount.Total)
	}
	if r.SuccessTime != nil {
		out.SucceededAt = *r.SuccessTime
	}
	return out, nil
}

func payStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func payInt(i *int64) int64 {
	if i == nil {
		return 0
	}
	return *i
}

// payReasons classifies WeChat Pay error codes. Codes not listed fall back
// on the HTTP status (payReason).
//
// Conflicts are state conflicts the caller can act on: the order is closed
// or paid, out_trade_no was used with other parameters, or the refund
// exceeds what is left (NOT_ENOUGH — the simulator's answer for that; on the
// real platform it may also mean the merchant's balance is short, which
// equally needs a person). TRADE_ERROR and RULE_LIMIT are the platform's
// business refusals (risk control, limits): rejected, not retried.
var payReasons = map[string]adapters.Reason{
	"PARAM_ERROR":           adapters.ReasonInvalidRequest,
	"INVALID_REQUEST":       adapters.ReasonInvalidRequest,
	"APPID_MCHID_NOT_MATCH": adapters.ReasonAuth,
	"MCH_NOT_EXISTS":        adapters.ReasonAuth,
	"NO_AUTH":               adapters.ReasonAuth,
	"NOAUTH":                adapters.ReasonAuth,
	"SIGN_ERROR":            adapters.ReasonAuth,
	"ORDER_CLOSED":          adapters.ReasonConflict,
	"ORDERPAID":             adapters.ReasonConflict,
	"ORDER_PAID":            adapters.ReasonConflict,
	"OUT_TRADE_NO_USED":     adapters.ReasonConflict,
	"NOT_ENOUGH":            adapters.ReasonConflict,
	"TRADE_ERROR":           adapters.ReasonRejected,
	"RULE_LIMIT":            adapters.ReasonRejected,
	"USER_ACCOUNT_ABNORMAL": adapters.ReasonRejected,
	"ORDER_NOT_EXIST":       adapters.ReasonNotFound,
	"ORDERNOTEXIST":         adapters.ReasonNotFound,
	"RESOURCE_NOT_EXISTS":   adapters.ReasonNotFound,
	"FREQUENCY_LIMITED":     adapters.ReasonRateLimited,
	"SYSTEM_ERROR":          adapters.ReasonBusy,
	"SYSTEMERROR":           adapters.ReasonBusy,
	"BANK_ERROR":            adapters.ReasonBusy,
	"BANKERROR":             adapters.ReasonBusy,
}

// payReason classifies a WeChat Pay error answer.
func payReason(status int, code string) adapters.Reason {
	if r, ok := payReasons[code]; ok {
		return r
	}
	switch {
	case status == http.StatusUnauthorized:
		return adapters.ReasonAuth
	case status == http.StatusNotFound:
		return adapters.ReasonNotFound
	case status == http.StatusTooManyRequests:
		return adapters.ReasonRateLimited
	case status >= 500:
		return adapters.ReasonBusy
	}
	return adapters.ReasonRejected
}

// payError turns an SDK error into a *adapters.PlatformError: error answers
// by code and status, failed round trips as transport errors, anything else
// (an answer whose signature does not verify, a body that does not parse)
// as a bad response.
func payError(api string, err error) error {
	var apiErr *core.APIError
	if errors.As(err, &apiErr) {
		return &adapters.PlatformError{
			Platform: PayPlatform, API: api, Reason: payReason(apiErr.StatusCode, apiErr.Code),
			HTTPStatus: apiErr.StatusCode, Code: apiErr.Code, Message: apiErr.Message,
		}
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return adapters.TransportError(PayPlatform, api, err)
	}
	return &adapters.PlatformError{Platform: PayPlatform, API: api, Reason: adapters.ReasonBadResponse, Err: err}
}

func payBadResponse(api, msg string) error {
	return &adapters.PlatformError{Platform: PayPlatform, API: api, Reason: adapters.ReasonBadResponse, Message: msg}
}
