package wechat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
)

// XPayPlatform is the Platform of virtual payment PlatformErrors and
// metrics.
const XPayPlatform = "xpay"

// xpayRequestPrefix is the path of the server APIs, /xpay/<name>.
const xpayRequestPrefix = "/xpay/"

// Virtual payment errcodes (silenceper's virtualpayment constants, WeChat's
// API pages).
const (
	xpayErrOpenID       = 268490001
	xpayErrParam        = 268490002
	xpayErrSign         = 268490003
	xpayErrRepeated     = 268490004 // the same operation succeeded before
	xpayErrCancelled    = 268490005 // refunded through cancel_currency_pay
	xpayErrBalance      = 268490006
	xpayErrSensitive    = 268490007
	xpayErrNotPublished = 268490008
	xpayErrSessionKey   = 268490009
	xpayErrBillPending  = 268490011
	xpayErrBatchRunning = 268490012
	xpayErrVerified     = 268490013
	xpayErrRefunding    = 268490014 // refund in progress: retry with the same parameters
	xpayErrFrequency    = 268490015
	xpayErrLeftFee      = 268490016
	wechatErrBadSig     = 87009 // checksession: the session key is not the user's current one
)

// XPayReason classifies the errcodes of the virtual payment APIs and of
// checksession.
func XPayReason(code int64) adapters.Reason {
	switch code {
	case xpayErrOpenID:
		return adapters.ReasonInvalidOpenID
	case xpayErrParam, xpayErrSensitive:
		return adapters.ReasonInvalidRequest
	case xpayErrSign:
		return adapters.ReasonAuth
	case xpayErrRepeated, xpayErrCancelled, xpayErrBatchRunning, xpayErrVerified, xpayErrLeftFee:
		return adapters.ReasonConflict
	case xpayErrBalance:
		return adapters.ReasonInsufficientFunds
	case xpayErrNotPublished:
		return adapters.ReasonRejected
	case xpayErrSessionKey, wechatErrBadSig:
		return adapters.ReasonSessionKeyExpired
	case xpayErrRefunding:
		return adapters.ReasonBusy
	case xpayErrFrequency:
		return adapters.ReasonRateLimited
	}
	return miniprogramReason(code)
}

// XPay is one mini-program's WeChat virtual payment (虚拟支付, xpay): the
// signed parameters of wx.requestVirtualPayment and the server APIs at
// the configured wechat_api, hand-written over net/http (see the README's
// "What is hand-written"). Every API call is signed with pay_sig, and the
// three that need it (query_user_balance, currency_pay,
// cancel_currency_pay) with the user's signature too; the user's
// session_key comes from Options.SessionKeys and never leaves minigate.
type XPay struct {
	appID     string // minigate app id
	offerID   string
	env       int
	appKey    string // AppKey of env
	prodKey   string // production AppKey: download_bill has no env
	coinPrice int64
	api       *CustomerProtocol // the transport: access token, errcode answers
	keys      adapters.SessionKeys
	now       func() time.Time
}

// NewXPay returns app's virtual payment client. The app needs a
// virtual_payment section; opts.Tokens and opts.SessionKeys are required.
func NewXPay(app *config.App, opts adapters.Options) (*XPay, error) {
	if app == nil || app.VirtualPayment == nil {
		return nil, errors.New("wechat: xpay: the app has no virtual_payment section")
	}
	if opts.Tokens == nil || opts.SessionKeys == nil {
		return nil, fmt.Errorf("wechat: xpay: app %q: an access token source and session keys are required", app.ID)
	}
	v := app.VirtualPayment
	x := &XPay{
		appID: app.ID, offerID: v.OfferID, appKey: v.ActiveAppKey(), prodKey: v.AppKey,
		coinPrice: v.CoinPrice, keys: opts.SessionKeys, now: opts.Clock(),
	}
	if v.Sandbox() {
		x.env = XPayEnvSandbox
	}
	if x.offerID == "" || x.appKey == "" {
		return nil, fmt.Errorf("wechat: xpay: app %q: offer_id and the AppKey of env %s are required", app.ID, v.Env)
	}
	base := strings.TrimRight(opts.Endpoints.WeChatAPI, "/")
	if base == "" {
		base = config.DefaultWeChatAPI
	}
	hc, err := adapters.NewHTTPClient(miniprogramTimeout(opts), "", "")
	if err != nil {
		return nil, fmt.Errorf("wechat: xpay: %w", err)
	}
	x.api = &CustomerProtocol{Platform: XPayPlatform, Base: base, HTTP: hc, Tokens: opts.Tokens, Reason: XPayReason, Now: x.now}
	return x, nil
}

// Env is the environment orders are made in: XPayEnvProduction or
// XPayEnvSandbox.
func (x *XPay) Env() int { return x.env }

// CoinPrice is the price of one coin in fen (0: coins are not sold).
func (x *XPay) CoinPrice() int64 { return x.coinPrice }

// XPayPurchase is what wx.requestVirtualPayment is to buy.
type XPayPurchase struct {
	Mode       string // XPayModeGoods or XPayModeCoins
	OpenID     string // the payer
	OutTradeNo string // 8–32 of [0-9A-Za-z_-|*@], not starting with _
	ProductID  string // goods mode
	GoodsPrice int64  // goods mode: unit price in fen, the product's configured price
	Quantity   int64  // goods, or coins
	Attach     string // passed back in the delivery push
}

// PayParams signs fresh wx.requestVirtualPayment parameters for p: mode,
// signData (the exact JSON text signed), paySig and signature. It first
// asks WeChat whether the payer's stored session_key is still current
// (checksession); a stale or missing one is a PlatformError with Reason
// session_key_expired, since the platform would refuse the signature
// (-15005) and the user must log in again.
func (x *XPay) PayParams(ctx context.Context, p XPayPurchase) (map[string]string, error) {
	if p.Mode != XPayModeGoods && p.Mode != XPayModeCoins {
		return nil, fmt.Errorf("wechat: xpay pay params: unknown mode %q", p.Mode)
	}
	sd := xpaySignData{
		OfferID: x.offerID, BuyQuantity: p.Quantity, Env: x.env, CurrencyType: "CNY",
		OutTradeNo: p.OutTradeNo, Attach: p.Attach,
	}
	if p.Mode == XPayModeGoods {
		sd.ProductID, sd.GoodsPrice = p.ProductID, p.GoodsPrice
	}
	signData, err := xpayJSON(sd)
	if err != nil {
		return nil, err
	}
	key, err := x.sessionKey(ctx, "pay_params", p.OpenID)
	if err != nil {
		return nil, fmt.Errorf("wechat: xpay pay params: %w", err)
	}
	if err := x.CheckSessionKey(ctx, p.OpenID, key); err != nil {
		return nil, fmt.Errorf("wechat: xpay pay params: %w", err)
	}
	return map[string]string{
		"mode":      p.Mode,
		"signData":  string(signData),
		"paySig":    XPaySig(x.appKey, xpayClientURI, signData),
		"signature": XPayUserSignature(key, signData),
	}, nil
}

// CheckSessionKey asks WeChat whether key is openid's current session_key
// (GET /wxa/checksession, signature = HMAC-SHA256(key, "")). 87009 is a
// PlatformError with Reason session_key_expired.
func (x *XPay) CheckSessionKey(ctx context.Context, openid, key string) error {
	q := url.Values{"openid": {openid}, "signature": {XPayUserSignature(key, nil)}, "sig_method": {"hmac_sha256"}}
	err := x.api.withToken(ctx, func(token string) error {
		var ans errAnswer
		return x.api.do(ctx, "checksession", http.MethodGet, "/wxa/checksession", cloneValues(q), token, "", nil, &ans)
	})
	if err != nil {
		return fmt.Errorf("checksession: %w", err)
	}
	return nil
}

// sessionKey returns openid's stored session_key; none is a PlatformError
// with Reason session_key_expired (for api).
func (x *XPay) sessionKey(ctx context.Context, api, openid string) (string, error) {
	key, err := x.keys.SessionKey(ctx, x.appID, openid)
	if errors.Is(err, adapters.ErrNoSessionKey) {
		return "", &adapters.PlatformError{Platform: XPayPlatform, API: api, Reason: adapters.ReasonSessionKeyExpired,
			Message: "minigate has no usable session_key for the user", Err: err}
	}
	if err != nil {
		return "", fmt.Errorf("session key: %w", err)
	}
	return key, nil
}

func cloneValues(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// call posts body to /xpay/<api>, signed with pay_sig (AppKey key) and,
// when openid is not empty, the user's signature, and decodes the answer
// into out.
func (x *XPay) call(ctx context.Context, api, key string, body any, openid string, out interface{ status() errAnswer }) error {
	raw, err := xpayJSON(body)
	if err != nil {
		return err
	}
	q := url.Values{"pay_sig": {XPaySig(key, xpayRequestPrefix+api, raw)}}
	if openid != "" {
		sk, err := x.sessionKey(ctx, api, openid)
		if err != nil {
			return err
		}
		q.Set("signature", XPayUserSignature(sk, raw))
	}
	return x.api.withToken(ctx, func(token string) error {
		return x.api.do(ctx, api, http.MethodPost, xpayRequestPrefix+api, cloneValues(q), token, "application/json", raw, out)
	})
}

// XPay order statuses (query_order's status; silenceper's constants).
const (
	XPayStatusInit         = 0 // not created, cannot be paid
	XPayStatusCreated      = 1
	XPayStatusPaid         = 2 // paid, not delivered yet
	XPayStatusDelivering   = 3
	XPayStatusDelivered    = 4
	XPayStatusRefunded     = 5
	XPayStatusClosed       = 6
	XPayStatusRefundFailed = 7
)

// XPayOrderInfo is query_order's order: a cash order (OrderType 0) or a
// refund (OrderType 1). Amounts are fen.
type XPayOrderInfo struct {
	OrderID        string `json:"order_id"`
	WxOrderID      string `json:"wx_order_id"`
	Status         int    `json:"status"`
	OrderType      int    `json:"order_type"`
	OrderFee       int64  `json:"order_fee"`
	CouponFee      int64  `json:"coupon_fee"`
	PaidFee        int64  `json:"paid_fee"`
	RefundFee      int64  `json:"refund_fee"`
	LeftFee        int64  `json:"left_fee"`
	CreateTime     int64  `json:"create_time"`
	UpdateTime     int64  `json:"update_time"`
	PaidTime       int64  `json:"paid_time"` // payment, or refund, time
	ProvideTime    int64  `json:"provide_time"`
	EnvType        int    `json:"env_type"` // 1 production, 2 sandbox (unlike env)
	BizMeta        string `json:"biz_meta"`
	ChannelOrderID string `json:"channel_order_id"`
	WxPayOrderID   string `json:"wxpay_order_id"`
}

// Paid reports whether money was taken for a cash order (paid, delivering,
// delivered, refunded, refund failed).
func (o *XPayOrderInfo) Paid() bool {
	switch o.Status {
	case XPayStatusPaid, XPayStatusDelivering, XPayStatusDelivered, XPayStatusRefunded, XPayStatusRefundFailed:
		return true
	}
	return false
}

// QueryOrder returns the order (or refund) orderID of openid
// (POST /xpay/query_order). An order the platform does not know is a
// PlatformError with Reason not_found: the platform's errcode for that is
// not documented, and the answer to a well-formed query that names no
// order (errcode 268490002, or no order in the answer) is taken for it.
func (x *XPay) QueryOrder(ctx context.Context, openid, orderID string) (XPayOrderInfo, error) {
	const api = "query_order"
	var ans struct {
		errAnswer
		Order *XPayOrderInfo `json:"order"`
	}
	body := struct {
		OpenID  string `json:"openid"`
		Env     int    `json:"env"`
		OrderID string `json:"order_id"`
	}{openid, x.env, orderID}
	err := x.call(ctx, api, x.appKey, body, "", &ans)
	if pe, ok := adapters.AsPlatformError(err); ok && pe.Code == strconv.Itoa(xpayErrParam) {
		pe.Reason = adapters.ReasonNotFound
	}
	if err == nil && ans.Order == nil {
		err = &adapters.PlatformError{Platform: XPayPlatform, API: api, Reason: adapters.ReasonNotFound, Message: "no order in the answer"}
	}
	if err == nil && ans.Order.OrderID != orderID {
		err = x.api.badResponse(api, "the answer is about another order")
	}
	if err != nil {
		return XPayOrderInfo{}, fmt.Errorf("wechat: xpay query order: %w", err)
	}
	return *ans.Order, nil
}

// XPayRefundRequest asks for a refund of part or all of a paid cash order.
type XPayRefundRequest struct {
	OpenID        string
	OrderID       string // the cash order's out_trade_no
	RefundOrderID string // 8–32 of [A-Za-z0-9_-]; the same id refunds once
	RefundFee     int64  // fen
	// Reason is refund_reason "0"–"5" (0 no description … 5 other);
	// ReqFrom is req_from "1" customer service, "2" user, "3" other.
	Reason, ReqFrom string
	BizMeta         string // ≤ 1024 bytes, returned by query_order
}

// XPayRefundStarted is refund_order's answer: the refund has started; its
// result comes by xpay_refund_notify and query_order.
type XPayRefundStarted struct {
	RefundOrderID   string `json:"refund_order_id"`
	RefundWxOrderID string `json:"refund_wx_order_id"`
	PayOrderID      string `json:"pay_order_id"`
	PayWxOrderID    string `json:"pay_wx_order_id"`
}

// Refund starts a refund (POST /xpay/refund_order). refund_order wants the
// order's left_fee as the platform sees it, so the order is queried first;
// a left_fee that changed in between (268490016) is a conflict, and
// 268490014 (a refund still in progress) is busy: retry with the same
// request.
func (x *XPay) Refund(ctx context.Context, r XPayRefundRequest) (XPayRefundStarted, error) {
	o, err := x.QueryOrder(ctx, r.OpenID, r.OrderID)
	if err != nil {
		return XPayRefundStarted{}, fmt.Errorf("wechat: xpay refund: %w", err)
	}
	reason, from := r.Reason, r.ReqFrom
	if reason == "" {
		reason = "0"
	}
	if from == "" {
		from = "3"
	}
	body := struct {
		OpenID        string `json:"openid"`
		OrderID       string `json:"order_id"`
		RefundOrderID string `json:"refund_order_id"`
		LeftFee       int64  `json:"left_fee"`
		RefundFee     int64  `json:"refund_fee"`
		BizMeta       string `json:"biz_meta"`
		RefundReason  string `json:"refund_reason"`
		ReqFrom       string `json:"req_from"`
		Env           int    `json:"env"`
	}{r.OpenID, r.OrderID, r.RefundOrderID, o.LeftFee, r.RefundFee, r.BizMeta, reason, from, x.env}
	var ans struct {
		errAnswer
		XPayRefundStarted
	}
	if err := x.call(ctx, "refund_order", x.appKey, body, "", &ans); err != nil {
		return XPayRefundStarted{}, fmt.Errorf("wechat: xpay refund: %w", err)
	}
	return ans.XPayRefundStarted, nil
}

// NotifyProvideGoods tells WeChat a cash order was delivered
// (POST /xpay/notify_provide_goods): the manual fallback when the
// delivery push was not acknowledged.
func (x *XPay) NotifyProvideGoods(ctx context.Context, orderID string) error {
	body := struct {
		OrderID string `json:"order_id"`
		Env     int    `json:"env"`
	}{orderID, x.env}
	var ans errAnswer
	if err := x.call(ctx, "notify_provide_goods", x.appKey, body, "", &ans); err != nil {
		return fmt.Errorf("wechat: xpay notify provide goods: %w", err)
	}
	return nil
}

// xpayFlag is a boolean the platform may send as true/false (its
// documentation) or 0/1 (silenceper's type).
type xpayFlag bool

// UnmarshalJSON accepts true, false, 0 and 1.
func (f *xpayFlag) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true", "1":
		*f = true
	case "false", "0", "null":
		*f = false
	default:
		return fmt.Errorf("not a boolean: %s", b)
	}
	return nil
}

// XPayBalance is a user's coins (POST /xpay/query_user_balance).
type XPayBalance struct {
	Balance        int64 `json:"balance"`         // all coins, presented ones included
	PresentBalance int64 `json:"present_balance"` // presented coins
	SumSave        int64 `json:"sum_save"`        // coins ever bought
	SumPresent     int64 `json:"sum_present"`     // coins ever presented
	SumBalance     int64 `json:"sum_balance"`     // coins ever added
	SumCost        int64 `json:"sum_cost"`        // coins ever spent
	FirstSave      bool  `json:"first_save_flag"` // the first-purchase offer applies
}

// QueryBalance returns openid's coins; userIP is the user's IP address.
func (x *XPay) QueryBalance(ctx context.Context, openid, userIP string) (XPayBalance, error) {
	body := struct {
		OpenID string `json:"openid"`
		Env    int    `json:"env"`
		UserIP string `json:"user_ip"`
	}{openid, x.env, userIP}
	var ans struct {
		errAnswer
		Balance        int64    `json:"balance"`
		PresentBalance int64    `json:"present_balance"`
		SumSave        int64    `json:"sum_save"`
		SumPresent     int64    `json:"sum_present"`
		SumBalance     int64    `json:"sum_balance"`
		SumCost        int64    `json:"sum_cost"`
		FirstSave      xpayFlag `json:"first_save_flag"`
	}
	if err := x.call(ctx, "query_user_balance", x.appKey, body, openid, &ans); err != nil {
		return XPayBalance{}, fmt.Errorf("wechat: xpay query balance: %w", err)
	}
	return XPayBalance{
		Balance: ans.Balance, PresentBalance: ans.PresentBalance, SumSave: ans.SumSave, SumPresent: ans.SumPresent,
		SumBalance: ans.SumBalance, SumCost: ans.SumCost, FirstSave: bool(ans.FirstSave),
	}, nil
}

// XPayPayItem is one line of a coin payment's payitem.
type XPayPayItem struct {
	ProductID string `json:"productid"`
	UnitPrice int64  `json:"unit_price"`
	Quantity  int64  `json:"quantity"`
}

// XPaySpend spends a user's coins (currency_pay).
type XPaySpend struct {
	OpenID, UserIP string
	OrderID        string // the merchant's id of the payment; the same id spends once
	Amount         int64  // coins
	Items          []XPayPayItem
	Remark         string
	DeviceType     int // 1 Android, 2 iOS
}

// XPaySpent is currency_pay's answer.
type XPaySpent struct {
	OrderID           string `json:"order_id"`
	Balance           int64  `json:"balance"`
	UsedPresentAmount int64  `json:"used_present_amount"`
}

// Spend spends coins (POST /xpay/currency_pay). 268490004 (this order id
// already spent) is a conflict, 268490006 insufficient funds.
func (x *XPay) Spend(ctx context.Context, s XPaySpend) (XPaySpent, error) {
	items := "[]"
	if len(s.Items) > 0 {
		b, err := xpayJSON(s.Items)
		if err != nil {
			return XPaySpent{}, err
		}
		items = string(b)
	}
	body := struct {
		OpenID     string `json:"openid"`
		Env        int    `json:"env"`
		UserIP     string `json:"user_ip"`
		Amount     int64  `json:"amount"`
		OrderID    string `json:"order_id"`
		PayItem    string `json:"payitem"`
		Remark     string `json:"remark"`
		DeviceType int    `json:"device_type"`
	}{s.OpenID, x.env, s.UserIP, s.Amount, s.OrderID, items, s.Remark, xpayDevice(s.DeviceType)}
	var ans struct {
		errAnswer
		XPaySpent
	}
	if err := x.call(ctx, "currency_pay", x.appKey, body, s.OpenID, &ans); err != nil {
		return XPaySpent{}, fmt.Errorf("wechat: xpay currency pay: %w", err)
	}
	return ans.XPaySpent, nil
}

// xpayDevice defaults device_type to 1 (Android). It is sent as a number
// (WxJava; silenceper sends a string in currency_pay only).
func xpayDevice(d int) int {
	if d == 0 {
		return 1
	}
	return d
}

// XPayCancelSpend gives back coins of a payment (cancel_currency_pay).
type XPayCancelSpend struct {
	OpenID, UserIP string
	PayOrderID     string // the currency_pay order id
	OrderID        string // this cancellation's id; the same id cancels once
	Amount         int64  // coins
	DeviceType     int
}

// CancelSpend gives coins back (POST /xpay/cancel_currency_pay).
func (x *XPay) CancelSpend(ctx context.Context, c XPayCancelSpend) error {
	body := struct {
		OpenID     string `json:"openid"`
		Env        int    `json:"env"`
		UserIP     string `json:"user_ip"`
		PayOrderID string `json:"pay_order_id"`
		OrderID    string `json:"order_id"`
		Amount     int64  `json:"amount"`
		DeviceType int    `json:"device_type"`
	}{c.OpenID, x.env, c.UserIP, c.PayOrderID, c.OrderID, c.Amount, xpayDevice(c.DeviceType)}
	var ans errAnswer
	if err := x.call(ctx, "cancel_currency_pay", x.appKey, body, c.OpenID, &ans); err != nil {
		return fmt.Errorf("wechat: xpay cancel currency pay: %w", err)
	}
	return nil
}

// XPayPresent gives a user coins (present_currency).
type XPayPresent struct {
	OpenID     string
	OrderID    string // the same id presents once
	Amount     int64
	DeviceType int
}

// Present gives coins (POST /xpay/present_currency). The platform offers
// no query for presents: a repeat answered 268490004 means the first one
// succeeded, and is a success here.
func (x *XPay) Present(ctx context.Context, p XPayPresent) error {
	body := struct {
		OpenID     string `json:"openid"`
		Env        int    `json:"env"`
		OrderID    string `json:"order_id"`
		Amount     int64  `json:"amount"`
		DeviceType int    `json:"device_type"`
	}{p.OpenID, x.env, p.OrderID, p.Amount, xpayDevice(p.DeviceType)}
	var ans errAnswer
	err := x.call(ctx, "present_currency", x.appKey, body, "", &ans)
	if pe, ok := adapters.AsPlatformError(err); ok && pe.Code == strconv.Itoa(xpayErrRepeated) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wechat: xpay present currency: %w", err)
	}
	return nil
}

// IsRepeated reports whether err is the platform's "this operation already
// succeeded" (268490004), which currency_pay and cancel_currency_pay
// answer to a repeated order id.
func IsRepeated(err error) bool {
	pe, ok := adapters.AsPlatformError(err)
	return ok && pe.Platform == XPayPlatform && pe.Code == strconv.Itoa(xpayErrRepeated)
}

// unixTime is t seconds since the epoch, the zero Time for 0.
func unixTime(t int64) time.Time {
	if t <= 0 {
		return time.Time{}
	}
	return time.Unix(t, 0)
}
