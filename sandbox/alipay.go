package sandbox

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// The Alipay OpenAPI gateway (POST or GET /sandbox/alipay/gateway.do) as the
// platform serves it, and the notifications it sends: trade async notifies
// (payments and refunds) and mini-program message notifications. Requests
// are verified (RSA2 over the sorted parameters, sign_type included) with the
// app's public key; responses are {"<method>_response": {...}, "sign": "…"}
// signed over the exact JSON text of the response value with the Alipay key.
// This implementation is written independently of adapters/alipay and of the
// SDK minigate uses.
//
// The message notification follows Alipay's message-service envelope
// (notify_id, utc_timestamp, msg_method, app_id, version, charset,
// sign_type, sign, biz_content, encrypt_type when biz_content is AES
// encrypted with the app's content key). The msg_method name and the
// biz_content fields of a user message are the simulator's own model:
// nobody here could confirm Alipay's mini-program chat push.

// Alipay facts the simulator relies on.
const (
	// AlipayMessageMethod is the msg_method of simulated user messages.
	AlipayMessageMethod = "alipay.open.mini.im.message.receive"

	alipayTimeLayout      = "2006-01-02 15:04:05"
	alipayRefundLayout    = "2006-01-02 15:04:05.000"
	alipayMinAmount       = 1           // fen: 0.01 yuan
	alipayMaxAmount       = 10000000000 // fen: 100000000.00 yuan
	alipayTimestampSkew   = 15 * time.Minute
	alipayStaleBy         = 10 * time.Minute
	alipayForeignAppID    = "2021000000000009"
	alipayForeignSellerID = "2088000000000009"
	alipayMaxSubjectRunes = 256
)

// alipayZone is Asia/Shanghai, which has had no DST since 1991.
var alipayZone = time.FixedZone("CST", 8*3600)

var (
	alipayOutTradeNoRE = regexp.MustCompile(`^[0-9A-Za-z_]{1,64}$`)
	alipayUserIDRE     = regexp.MustCompile(`^2088[0-9]{12}$`)
	alipayYuanRE       = regexp.MustCompile(`^(0|[1-9][0-9]{0,8})(\.[0-9]{1,2})?$`)
	alipayMsgTypeRE    = regexp.MustCompile(`^[a-z_]{1,32}$`)
)

// Trade states.
const (
	alipayWaitBuyerPay = "WAIT_BUYER_PAY"
	alipayTradeSuccess = "TRADE_SUCCESS"
	alipayTradeClosed  = "TRADE_CLOSED"
)

// alipayCodeMsg is the msg Alipay sends with each public code.
var alipayCodeMsg = map[string]string{
	"10000": "Success",
	"20000": "Service Currently Unavailable",
	"40001": "Missing Required Arguments",
	"40002": "Invalid Arguments",
	"40004": "Business Failed",
	"40006": "Insufficient Permissions",
}

// alipayState is the simulated Alipay ledger: every trade and refund, per
// app, with the amounts and times a daily bill needs.
type alipayState struct {
	mu      sync.Mutex
	trades  map[string]*alipayTrade // app_id + "|" + out_trade_no
	tradeNo map[string]*alipayTrade // trade_no
}

type alipayTrade struct {
	AppID          string
	TradeNo        string
	OutTradeNo     string
	Subject        string
	Body           string
	BuyerID        string
	BuyerOpenID    string
	NotifyURL      string
	PassbackParams string
	Total          int64 // fen
	Expire         time.Time
	Status         string
	Created        time.Time
	Paid           time.Time // zero until paid
	Closed         time.Time
	Refunded       int64 // fen, cumulative
	Refunds        []*alipayRefund
	// request is the canonical create request, for idempotency checks.
	request string
	// payNotifyID is the payment notification's notify_id, stable across
	// re-sends of that notification.
	payNotifyID string
}

type alipayRefund struct {
	OutRequestNo string
	Reason       string
	Amount       int64 // fen
	At           time.Time
	NotifyID     string
}

func newAlipayState() *alipayState {
	return &alipayState{trades: map[string]*alipayTrade{}, tradeNo: map[string]*alipayTrade{}}
}

// alipayFault is a failed gateway call: the public code, sub_code and sub_msg.
type alipayFault struct {
	code, sub, msg string
}

func (f *alipayFault) Error() string { return f.code + "/" + f.sub + ": " + f.msg }

func missingArg(sub, msg string) *alipayFault { return &alipayFault{"40001", sub, msg} }
func invalidArg(sub, msg string) *alipayFault { return &alipayFault{"40002", sub, msg} }
func acqFault(sub, msg string) *alipayFault   { return &alipayFault{"40004", sub, msg} }
func acqInvalid(format string, args ...any) *alipayFault {
	return acqFault("ACQ.INVALID_PARAMETER", fmt.Sprintf(format, args...))
}

// alipayCall is one verified gateway request.
type alipayCall struct {
	app    *App
	method string
	params url.Values
	biz    map[string]any
	now    time.Time
	// origin is the gateway's own base URL as the caller reached it (its
	// path without /gateway.do), for links the gateway hands out.
	origin string
}

// alipayHandler serves one method; it returns the response fields besides
// code and msg, or an *alipayFault.
type alipayHandler func(s *Sandbox, c *alipayCall) (map[string]any, error)

var alipayMethods = map[string]alipayHandler{
	"alipay.system.oauth.token":         (*Sandbox).alipayOAuthToken,
	"alipay.trade.create":               (*Sandbox).alipayTradeCreate,
	"alipay.trade.query":                (*Sandbox).alipayTradeQuery,
	"alipay.trade.close":                (*Sandbox).alipayTradeClose,
	"alipay.trade.refund":               (*Sandbox).alipayTradeRefund,
	"alipay.trade.fastpay.refund.query": (*Sandbox).alipayRefundQuery,
	alipayBillMethod:                    (*Sandbox).alipayBillDownloadURL,
	alipayCertMethod:                    (*Sandbox).alipayCertDownload,
}

func (s *Sandbox) mountAlipay(r fiber.Router) {
	r.Get("/gateway.do", s.alipayGateway)
	r.Post("/gateway.do", s.alipayGateway)
	r.Get(alipayBillPath, s.alipayBillDownload)
}

// alipayGateway serves gateway.do: parameters from the query and, for POST,
// the form body.
func (s *Sandbox) alipayGateway(c *fiber.Ctx) error {
	raw := s.alipayServe(c)
	c.Set(fiber.HeaderContentType, "application/json;charset=utf-8")
	return c.Send(raw)
}

func (s *Sandbox) alipayServe(c *fiber.Ctx) []byte {
	params, err := alipayParams(c)
	if err != nil {
		return alipayReply(nil, "error_response", alipayFields(err, nil), nil)
	}
	method := params.Get("method")
	call, encKey, err := s.alipayVerifyRequest(params)
	if err != nil {
		key := "error_response"
		if _, known := alipayMethods[method]; known && call != nil {
			key = alipayResponseKey(method)
		}
		var app *App
		if call != nil {
			app = call.app
		}
		return alipayReply(app, key, alipayFields(err, nil), nil)
	}
	call.origin = c.BaseURL() + strings.TrimSuffix(c.Path(), "/gateway.do")
	fields, err := alipayMethods[method](s, call)
	if method == "alipay.system.oauth.token" {
		// The login API answers success without code and msg, and failure
		// as error_response.
		if err != nil {
			return alipayReply(call.app, "error_response", alipayFields(err, nil), nil)
		}
		return alipayReply(call.app, alipayResponseKey(method), fields, nil)
	}
	return alipayReply(call.app, alipayResponseKey(method), alipayFields(err, fields), encKey)
}

func alipayResponseKey(method string) string {
	return strings.ReplaceAll(method, ".", "_") + "_response"
}

// alipayFields adds code and msg to a handler's result.
func alipayFields(err error, fields map[string]any) map[string]any {
	var f *alipayFault
	if err != nil && !errors.As(err, &f) {
		f = &alipayFault{"20000", "isp.unknown-error", err.Error()}
	}
	if f != nil {
		return map[string]any{"code": f.code, "msg": alipayCodeMsg[f.code], "sub_code": f.sub, "sub_msg": f.msg}
	}
	out := map[string]any{"code": "10000", "msg": alipayCodeMsg["10000"]}
	for k, v := range fields {
		out[k] = v
	}
	return out
}

// alipayReply renders {"<key>": value, "sign": "…"}. The value is encrypted
// (a JSON string of base64 AES ciphertext) when encKey is set; the
// signature, by app's Alipay key when app is known, covers the value's exact
// JSON text.
func alipayReply(app *App, key string, fields map[string]any, encKey []byte) []byte {
	value, err := json.Marshal(fields)
	if err != nil {
		value = []byte(`{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknown-error"}`)
	}
	if encKey != nil && fields["code"] == "10000" {
		// Only successful answers are encrypted; failures stay readable.
		ct, err := alipayEncrypt(encKey, value)
		if err == nil {
			value, _ = json.Marshal(ct)
		}
	}
	var b strings.Builder
	b.WriteString(`{"`)
	b.WriteString(key)
	b.WriteString(`":`)
	b.Write(value)
	if app != nil && app.Alipay != nil && app.Alipay.AlipayKey != nil {
		key, certSN := app.Alipay.signer()
		if certSN != "" {
			b.WriteString(`,"alipay_cert_sn":"`)
			b.WriteString(certSN)
			b.WriteString(`"`)
		}
		if sig, err := alipayRSASign(key, value); err == nil {
			b.WriteString(`,"sign":"`)
			b.WriteString(sig)
			b.WriteString(`"`)
		}
	}
	b.WriteString("}")
	return []byte(b.String())
}

// alipayParams merges the query and (for POST) the form body; a parameter
// given twice is refused.
func alipayParams(c *fiber.Ctx) (url.Values, error) {
	q, err := url.ParseQuery(string(c.Request().URI().QueryString()))
	if err != nil {
		return nil, invalidArg("isv.invalid-parameter", "malformed query string")
	}
	params := url.Values{}
	add := func(vs url.Values) error {
		for k, v := range vs {
			if len(v) != 1 || params.Has(k) {
				return invalidArg("isv.invalid-parameter", "parameter "+k+" given more than once")
			}
			params.Set(k, v[0])
		}
		return nil
	}
	if err := add(q); err != nil {
		return nil, err
	}
	if c.Method() == fiber.MethodPost && len(c.Body()) > 0 {
		ct := strings.ToLower(string(c.Request().Header.ContentType()))
		if !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return nil, invalidArg("isv.invalid-content-type", "the body must be application/x-www-form-urlencoded")
		}
		form, err := url.ParseQuery(string(c.Body()))
		if err != nil {
			return nil, invalidArg("isv.invalid-parameter", "malformed form body")
		}
		if err := add(form); err != nil {
			return nil, err
		}
	}
	return params, nil
}

// alipayVerifyRequest checks the common parameters and the signature, and
// decrypts and parses biz_content. It returns the call (with its app as soon
// as app_id is known, also on error, so errors can be signed) and the
// response encryption key when the request was encrypted.
func (s *Sandbox) alipayVerifyRequest(p url.Values) (*alipayCall, []byte, error) {
	appID := p.Get("app_id")
	if appID == "" {
		return nil, nil, missingArg("isv.missing-app-id", "app_id is required")
	}
	a := s.appByAppID(Alipay, appID)
	if a == nil || a.Alipay == nil {
		return nil, nil, invalidArg("isv.invalid-app-id", "no such app_id")
	}
	call := &alipayCall{app: a, method: p.Get("method"), params: p, now: s.now()}
	switch {
	case call.method == "":
		return call, nil, missingArg("isv.missing-method", "method is required")
	case alipayMethods[call.method] == nil:
		return call, nil, invalidArg("isv.invalid-method", "unknown method "+call.method)
	case p.Get("sign") == "":
		return call, nil, missingArg("isv.missing-signature", "sign is required")
	case p.Get("sign_type") != "RSA2":
		return call, nil, invalidArg("isv.invalid-signature-type", "sign_type must be RSA2")
	case !strings.EqualFold(p.Get("charset"), "utf-8"):
		return call, nil, invalidArg("isv.invalid-charset", "charset must be utf-8")
	case p.Get("version") != "1.0":
		return call, nil, invalidArg("isv.invalid-version", "version must be 1.0")
	case p.Has("format") && !strings.EqualFold(p.Get("format"), "JSON"):
		return call, nil, invalidArg("isv.invalid-format", "format must be JSON")
	}
	ts, err := time.ParseInLocation(alipayTimeLayout, p.Get("timestamp"), alipayZone)
	if err != nil {
		return call, nil, invalidArg("isv.invalid-timestamp", "timestamp must be yyyy-MM-dd HH:mm:ss")
	}
	if d := call.now.Sub(ts); d > alipayTimestampSkew || d < -alipayTimestampSkew {
		return call, nil, invalidArg("isv.invalid-timestamp", "timestamp too far from the gateway's clock")
	}
	if err := alipayCheckCertSNs(a, p); err != nil {
		return call, nil, err
	}
	sig, err := base64.StdEncoding.DecodeString(p.Get("sign"))
	if err != nil {
		return call, nil, invalidArg("isv.invalid-signature", "sign is not base64")
	}
	content := alipaySignContent(p, "sign")
	if err := alipayRSAVerify(a.Alipay.AppPublicKey, []byte(content), sig); err != nil {
		return call, nil, invalidArg("isv.invalid-signature", "验签出错，网关生成的验签字符串为："+content)
	}
	var encKey []byte
	biz := p.Get("biz_content")
	if et := p.Get("encrypt_type"); et != "" {
		if et != "AES" {
			return call, nil, invalidArg("isv.invalid-encrypt-type", "encrypt_type must be AES")
		}
		if encKey, err = base64.StdEncoding.DecodeString(a.Messages.AESKey); err != nil || len(encKey) == 0 {
			return call, nil, invalidArg("isv.invalid-encrypt", "the app has no content encryption key")
		}
		plain, err := alipayDecrypt(encKey, biz)
		if err != nil {
			return call, nil, invalidArg("isv.decryption-error", "biz_content could not be decrypted")
		}
		biz = string(plain)
	}
	call.biz = map[string]any{}
	if biz != "" {
		if err := json.Unmarshal([]byte(biz), &call.biz); err != nil || call.biz == nil {
			return call, nil, invalidArg("isv.invalid-parameter", "biz_content is not a JSON object")
		}
	}
	return call, encKey, nil
}

// bizString returns biz_content field key, which must be a string if present.
func (c *alipayCall) bizString(key string) (string, error) {
	v, ok := c.biz[key]
	if !ok || v == nil {
		return "", nil
	}
	str, ok := v.(string)
	if !ok {
		return "", acqInvalid("%s must be a string", key)
	}
	return str, nil
}

// bizStrings reads several string fields.
func (c *alipayCall) bizStrings(keys ...string) ([]string, error) {
	out := make([]string, len(keys))
	for i, k := range keys {
		v, err := c.bizString(k)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// alipayOAuthToken serves alipay.system.oauth.token with grant_type
// authorization_code: a single-use login code minted by the control routes.
func (s *Sandbox) alipayOAuthToken(c *alipayCall) (map[string]any, error) {
	if gt := c.params.Get("grant_type"); gt != "authorization_code" {
		return nil, invalidArg("isv.grant-type-invalid", "grant_type must be authorization_code")
	}
	code := c.params.Get("code")
	if code == "" {
		return nil, missingArg("isv.missing-code", "code is required")
	}
	name, res := s.redeemCode(c.app, code, "login")
	switch res {
	case codeUsed:
		return nil, invalidArg("isv.code-invalid", "授权码code已使用")
	case codeInvalid:
		return nil, invalidArg("isv.code-invalid", "授权码code无效")
	}
	u := s.User(c.app, name)
	return map[string]any{
		"user_id":       u.AlipayUserID,
		"open_id":       u.AlipayOpenID,
		"access_token":  "authusrB" + randomHex(16),
		"expires_in":    1296000,
		"refresh_token": "authusrB" + randomHex(16),
		"re_expires_in": 2592000,
		"auth_start":    c.now.In(alipayZone).Format(alipayTimeLayout),
	}, nil
}

// alipayTradeCreate serves alipay.trade.create. The same out_trade_no with
// the same amount, subject and buyer returns the same trade_no while unpaid;
// with anything else it is ACQ.CONTEXT_INCONSISTENT.
func (s *Sandbox) alipayTradeCreate(c *alipayCall) (map[string]any, error) {
	v, err := c.bizStrings("out_trade_no", "total_amount", "subject", "buyer_id", "buyer_open_id", "product_code", "time_expire", "body", "passback_params")
	if err != nil {
		return nil, err
	}
	outTradeNo, amount, subject, buyerID, buyerOpenID, product, expire, body, passback := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
	if !alipayOutTradeNoRE.MatchString(outTradeNo) {
		return nil, acqInvalid("out_trade_no must be 1-64 letters, digits or underscores")
	}
	total, ok := alipayParseYuan(amount)
	if !ok || total < alipayMinAmount || total > alipayMaxAmount {
		return nil, acqInvalid("total_amount must be yuan with at most 2 decimals in [0.01, 100000000]")
	}
	if subject == "" || utf8.RuneCountInString(subject) > alipayMaxSubjectRunes {
		return nil, acqInvalid("subject must be 1-256 characters")
	}
	switch {
	case buyerID == "" && buyerOpenID == "":
		return nil, acqInvalid("buyer_id or buyer_open_id is required")
	case buyerID != "" && !alipayUserIDRE.MatchString(buyerID):
		return nil, acqFault("ACQ.BUYER_NOT_EXIST", "buyer_id is not an Alipay user id")
	case product != "" && product != "JSAPI_PAY":
		return nil, acqInvalid("product_code must be JSAPI_PAY")
	}
	var expireAt time.Time
	if expire != "" {
		if expireAt, err = time.ParseInLocation(alipayTimeLayout, expire, alipayZone); err != nil {
			return nil, acqInvalid("time_expire must be yyyy-MM-dd HH:mm:ss")
		}
	}
	request := strings.Join([]string{strconv.FormatInt(total, 10), subject, buyerID, buyerOpenID}, "\x00")

	st := s.alipay
	st.mu.Lock()
	defer st.mu.Unlock()
	if t := st.trades[c.app.AppID+"|"+outTradeNo]; t != nil {
		t.expireIfDue(c.now)
		switch {
		case t.request != request:
			return nil, acqFault("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
		case !t.Paid.IsZero():
			return nil, acqFault("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
		case t.Status == alipayTradeClosed:
			return nil, acqFault("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
		}
		return map[string]any{"out_trade_no": t.OutTradeNo, "trade_no": t.TradeNo}, nil
	}
	t := &alipayTrade{
		AppID: c.app.AppID, TradeNo: st.newTradeNo(c.now), OutTradeNo: outTradeNo,
		Subject: subject, Body: body, BuyerID: buyerID, BuyerOpenID: buyerOpenID,
		NotifyURL: c.params.Get("notify_url"), PassbackParams: passback,
		Total: total, Expire: expireAt, Status: alipayWaitBuyerPay, Created: c.now, request: request,
	}
	st.trades[t.AppID+"|"+t.OutTradeNo] = t
	st.tradeNo[t.TradeNo] = t
	return map[string]any{"out_trade_no": t.OutTradeNo, "trade_no": t.TradeNo}, nil
}

// newTradeNo returns an unused 28-digit trade number: the date, "2200",
// then 16 random digits. Called with st.mu held.
func (st *alipayState) newTradeNo(now time.Time) string {
	for {
		n, err := rand.Int(rand.Reader, big.NewInt(1e16))
		if err != nil {
			panic("sandbox: crypto/rand: " + err.Error())
		}
		no := now.In(alipayZone).Format("20060102") + "2200" + fmt.Sprintf("%016d", n)
		if st.tradeNo[no] == nil {
			return no
		}
	}
}

// expireIfDue closes an unpaid trade whose time_expire has passed, as
// Alipay does. Called with the state lock held.
func (t *alipayTrade) expireIfDue(now time.Time) {
	if t.Status == alipayWaitBuyerPay && !t.Expire.IsZero() && now.After(t.Expire) {
		t.Status, t.Closed = alipayTradeClosed, t.Expire
	}
}

// findTrade looks up the trade named by biz_content's out_trade_no or
// trade_no for the calling app, and applies expiry. Called with st.mu held.
func (s *Sandbox) findTrade(c *alipayCall) (*alipayTrade, error) {
	v, err := c.bizStrings("out_trade_no", "trade_no")
	if err != nil {
		return nil, err
	}
	var t *alipayTrade
	switch {
	case v[0] != "":
		t = s.alipay.trades[c.app.AppID+"|"+v[0]]
	case v[1] != "":
		t = s.alipay.tradeNo[v[1]]
	default:
		return nil, acqInvalid("out_trade_no or trade_no is required")
	}
	if t == nil || t.AppID != c.app.AppID || (v[1] != "" && t.TradeNo != v[1]) {
		return nil, acqFault("ACQ.TRADE_NOT_EXIST", "交易不存在")
	}
	t.expireIfDue(c.now)
	return t, nil
}

// alipayTradeQuery serves alipay.trade.query.
func (s *Sandbox) alipayTradeQuery(c *alipayCall) (map[string]any, error) {
	s.alipay.mu.Lock()
	defer s.alipay.mu.Unlock()
	t, err := s.findTrade(c)
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"trade_no": t.TradeNo, "out_trade_no": t.OutTradeNo, "trade_status": t.Status,
		"total_amount": alipayFormatYuan(t.Total), "subject": t.Subject,
		"receipt_amount": "0.00", "buyer_pay_amount": "0.00", "invoice_amount": "0.00", "point_amount": "0.00",
	}
	if t.BuyerID != "" {
		out["buyer_user_id"] = t.BuyerID
	}
	if t.BuyerOpenID != "" {
		out["buyer_open_id"] = t.BuyerOpenID
	}
	if !t.Paid.IsZero() {
		out["send_pay_date"] = t.Paid.In(alipayZone).Format(alipayTimeLayout)
		for _, k := range []string{"receipt_amount", "buyer_pay_amount", "invoice_amount"} {
			out[k] = alipayFormatYuan(t.Total)
		}
	}
	return out, nil
}

// alipayTradeClose serves alipay.trade.close: only unpaid trades close.
func (s *Sandbox) alipayTradeClose(c *alipayCall) (map[string]any, error) {
	s.alipay.mu.Lock()
	defer s.alipay.mu.Unlock()
	t, err := s.findTrade(c)
	if err != nil {
		return nil, err
	}
	switch {
	case !t.Paid.IsZero():
		return nil, acqFault("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
	case t.Status == alipayTradeClosed:
		return nil, acqFault("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
	}
	t.Status, t.Closed = alipayTradeClosed, c.now
	return map[string]any{"trade_no": t.TradeNo, "out_trade_no": t.OutTradeNo}, nil
}

// alipayTradeRefund serves alipay.trade.refund: out_request_no refunds once
// (a repeat with the same amount answers fund_change "N"); refunds add up to
// at most the total; a full refund closes the trade. A successful refund is
// followed by a refund notification.
func (s *Sandbox) alipayTradeRefund(c *alipayCall) (map[string]any, error) {
	v, err := c.bizStrings("refund_amount", "out_request_no", "refund_reason")
	if err != nil {
		return nil, err
	}
	amount, ok := alipayParseYuan(v[0])
	if !ok || amount < alipayMinAmount {
		return nil, acqInvalid("refund_amount must be positive yuan with at most 2 decimals")
	}
	st := s.alipay
	st.mu.Lock()
	defer st.mu.Unlock()
	t, err := s.findTrade(c)
	if err != nil {
		return nil, err
	}
	reqNo := v[1]
	if reqNo == "" {
		reqNo = t.OutTradeNo
	}
	out := map[string]any{
		"trade_no": t.TradeNo, "out_trade_no": t.OutTradeNo,
	}
	if t.BuyerID != "" {
		out["buyer_user_id"] = t.BuyerID
	}
	if t.BuyerOpenID != "" {
		out["buyer_open_id"] = t.BuyerOpenID
	}
	if r := t.refund(reqNo); r != nil {
		if r.Amount != amount {
			return nil, acqFault("ACQ.DISCORDANT_REPEAT_REQUEST", "不一致的请求")
		}
		out["fund_change"], out["refund_fee"] = "N", alipayFormatYuan(t.Refunded)
		out["gmt_refund_pay"] = r.At.In(alipayZone).Format(alipayTimeLayout)
		return out, nil
	}
	switch {
	case t.Paid.IsZero() && t.Status == alipayTradeClosed:
		return nil, acqFault("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
	case t.Paid.IsZero():
		return nil, acqFault("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
	case t.Refunded+amount > t.Total:
		return nil, acqFault("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
	}
	r := &alipayRefund{OutRequestNo: reqNo, Reason: v[2], Amount: amount, At: c.now,
		NotifyID: alipayNotifyID(c.now, t.TradeNo, "refund", reqNo)}
	t.Refunds = append(t.Refunds, r)
	t.Refunded += amount
	if t.Refunded == t.Total {
		t.Status, t.Closed = alipayTradeClosed, c.now
	}
	out["fund_change"], out["refund_fee"] = "Y", alipayFormatYuan(t.Refunded)
	out["gmt_refund_pay"] = c.now.In(alipayZone).Format(alipayTimeLayout)
	if t.NotifyURL != "" {
		// Sent after this response, as Alipay does: minigate may still be
		// inside the refund call when it arrives.
		form := s.alipayTradeNotifyForm(c.app, t, r, Faults{}, c.now)
		go s.deliver(context.Background(), t.NotifyURL, alipayFormType, nil, []byte(form.Encode()))
	}
	return out, nil
}

// refund returns the trade's refund with out_request_no reqNo, or nil.
func (t *alipayTrade) refund(reqNo string) *alipayRefund {
	for _, r := range t.Refunds {
		if r.OutRequestNo == reqNo {
			return r
		}
	}
	return nil
}

// alipayRefundQuery serves alipay.trade.fastpay.refund.query: refund_status
// REFUND_SUCCESS for a refund that happened, no refund_status otherwise.
func (s *Sandbox) alipayRefundQuery(c *alipayCall) (map[string]any, error) {
	reqNo, err := c.bizString("out_request_no")
	if err != nil {
		return nil, err
	}
	s.alipay.mu.Lock()
	defer s.alipay.mu.Unlock()
	t, err := s.findTrade(c)
	if err != nil {
		return nil, err
	}
	if reqNo == "" {
		reqNo = t.OutTradeNo
	}
	out := map[string]any{"trade_no": t.TradeNo, "out_trade_no": t.OutTradeNo}
	if r := t.refund(reqNo); r != nil {
		out["out_request_no"] = r.OutRequestNo
		out["total_amount"] = alipayFormatYuan(t.Total)
		out["refund_amount"] = alipayFormatYuan(r.Amount)
		out["refund_status"] = "REFUND_SUCCESS"
		out["gmt_refund_pay"] = r.At.In(alipayZone).Format(alipayTimeLayout)
	}
	return out, nil
}

const alipayFormType = "application/x-www-form-urlencoded; charset=utf-8"

// payAlipay has the trade's buyer pay it: the trade becomes TRADE_SUCCESS
// and the async notification goes to its notify_url with f applied. Paying
// a paid trade sends the same notification again (same notify_id), as
// Alipay's retries do.
func (s *Sandbox) payAlipay(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	if a.Alipay == nil {
		return nil, fmt.Errorf("sandbox: app %s has no Alipay account", a.ID)
	}
	if f.BadMsgSignature || f.TamperCiphertext {
		return nil, errors.New("sandbox: bad_msg_signature and tamper_ciphertext do not apply to Alipay notifications")
	}
	now := s.now()
	st := s.alipay
	st.mu.Lock()
	t := st.trades[a.AppID+"|"+outTradeNo]
	if t == nil {
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: app %s has no Alipay trade %q", a.ID, outTradeNo)
	}
	t.expireIfDue(now)
	switch {
	case t.Status == alipayWaitBuyerPay:
		t.Status, t.Paid = alipayTradeSuccess, now
		t.payNotifyID = alipayNotifyID(now, t.TradeNo, "pay", "")
	case t.Paid.IsZero():
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: Alipay trade %q is closed", outTradeNo)
	}
	form := s.alipayTradeNotifyForm(a, t, nil, f, now)
	notifyURL := t.NotifyURL
	details := map[string]any{"trade_no": t.TradeNo, "out_trade_no": t.OutTradeNo, "notify_id": t.payNotifyID, "trade_status": form.Get("trade_status")}
	st.mu.Unlock()
	if notifyURL == "" {
		return nil, fmt.Errorf("sandbox: Alipay trade %q has no notify_url", outTradeNo)
	}
	return s.alipaySend(ctx, notifyURL, form, f, details)
}

// alipayTradeNotifyForm builds a signed trade_status_sync notification for
// t: the payment when r is nil, else refund r. Called with the state lock
// held.
func (s *Sandbox) alipayTradeNotifyForm(a *App, t *alipayTrade, r *alipayRefund, f Faults, now time.Time) url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	notifyTime := now
	if f.StaleTimestamp {
		notifyTime = now.Add(-alipayStaleBy)
	}
	appID, sellerID := a.AppID, a.Alipay.SellerID
	if f.ForeignAppID {
		appID = alipayForeignAppID
	}
	if f.ForeignMerchant {
		sellerID = alipayForeignSellerID
	}
	total := t.Total
	if f.Amount != nil {
		total = *f.Amount
	}
	set("notify_time", notifyTime.In(alipayZone).Format(alipayTimeLayout))
	set("notify_type", "trade_status_sync")
	set("app_id", appID)
	set("auth_app_id", appID)
	set("charset", "utf-8")
	set("version", "1.0")
	set("sign_type", "RSA2")
	set("trade_no", t.TradeNo)
	set("out_trade_no", t.OutTradeNo)
	set("buyer_id", t.BuyerID)
	set("buyer_open_id", t.BuyerOpenID)
	set("seller_id", sellerID)
	set("total_amount", alipayFormatYuan(total))
	set("receipt_amount", alipayFormatYuan(total))
	set("invoice_amount", alipayFormatYuan(total))
	set("buyer_pay_amount", alipayFormatYuan(total))
	set("point_amount", "0.00")
	set("subject", t.Subject)
	set("body", t.Body)
	set("passback_params", t.PassbackParams)
	set("gmt_create", t.Created.In(alipayZone).Format(alipayTimeLayout))
	set("gmt_payment", t.Paid.In(alipayZone).Format(alipayTimeLayout))
	set("fund_bill_list", `[{"amount":"`+alipayFormatYuan(total)+`","fundChannel":"ALIPAYACCOUNT"}]`)
	if r == nil {
		set("notify_id", t.payNotifyID)
		set("trade_status", alipayTradeSuccess)
	} else {
		set("notify_id", r.NotifyID)
		refunded := int64(0)
		for _, x := range t.Refunds {
			if refunded += x.Amount; x == r {
				break
			}
		}
		status := alipayTradeSuccess
		if refunded == t.Total {
			status = alipayTradeClosed
			set("gmt_close", r.At.In(alipayZone).Format(alipayTimeLayout))
		}
		set("trade_status", status)
		set("refund_fee", alipayFormatYuan(refunded))
		set("gmt_refund", r.At.In(alipayZone).Format(alipayRefundLayout))
		set("out_biz_no", r.OutRequestNo)
	}
	s.alipaySignForm(a, v, false, f.BadSignature)
	return v
}

// alipaySignForm signs a notification with the app's Alipay key: sorted
// non-empty parameters except sign, and except sign_type unless
// withSignType (message notifications sign it, trade notifications do not).
// In certificate mode with NotifyWithCertSN the form names the signing
// certificate in alipay_cert_sn, which is not signed.
func (s *Sandbox) alipaySignForm(a *App, v url.Values, withSignType, corrupt bool) {
	exclude := []string{"sign", "alipay_cert_sn", "sign_type"}
	if withSignType {
		exclude = exclude[:2]
	}
	key, certSN := a.Alipay.signer()
	if certSN != "" && a.Alipay.Certs.NotifyWithCertSN {
		v.Set("alipay_cert_sn", certSN)
	}
	sig, err := alipayRSASign(key, []byte(alipaySignContent(v, exclude...)))
	if err != nil {
		panic("sandbox: rsa sign: " + err.Error())
	}
	if corrupt {
		raw, _ := base64.StdEncoding.DecodeString(sig)
		raw[len(raw)/2] ^= 0x5a
		sig = base64.StdEncoding.EncodeToString(raw)
	}
	v.Set("sign", sig)
}

// alipaySend posts form to url with the delivery faults applied.
func (s *Sandbox) alipaySend(ctx context.Context, url string, form url.Values, f Faults, details map[string]any) (*Report, error) {
	body := []byte(form.Encode())
	if f.Truncate {
		body = body[:len(body)/2]
	}
	flat := make(map[string]string, len(form))
	for k := range form {
		flat[k] = form.Get(k)
	}
	sent, err := json.Marshal(flat)
	if err != nil {
		return nil, err
	}
	rep := s.sendWithFaults(ctx, f, func(ctx context.Context) Delivery {
		return s.deliver(ctx, url, alipayFormType, nil, body)
	})
	rep.Details, rep.Sent = details, sent
	return rep, nil
}

// alipayMessage is the biz_content of a simulated user message.
type alipayMessage struct {
	MsgID        string `json:"msg_id"`
	MsgType      string `json:"msg_type"`
	FromUserID   string `json:"from_user_id"`
	FromOpenID   string `json:"from_open_id,omitempty"`
	ToAppID      string `json:"to_app_id"`
	CreateTime   int64  `json:"create_time"`
	Content      string `json:"content,omitempty"`
	MediaID      string `json:"media_id,omitempty"`
	Title        string `json:"title,omitempty"`
	PagePath     string `json:"page_path,omitempty"`
	ThumbMediaID string `json:"thumb_media_id,omitempty"`
	Event        string `json:"event,omitempty"`
	SessionFrom  string `json:"session_from,omitempty"`
}

// pushAlipayMessage posts user u's message to a.CallbackURL+"/messages" as a
// signed message notification (biz_content AES-encrypted when the app has a
// content key), with req.Faults applied.
func (s *Sandbox) pushAlipayMessage(ctx context.Context, a *App, u User, req PushRequest) (*Report, error) {
	if a.Alipay == nil || a.CallbackURL == "" {
		return nil, fmt.Errorf("sandbox: app %s has no Alipay account or callback URL", a.ID)
	}
	f := req.Faults
	switch {
	case f.Amount != nil || f.ForeignMerchant:
		return nil, errors.New("sandbox: amount and foreign_merchant faults apply to payment notifications only")
	case f.BadMsgSignature:
		return nil, errors.New("sandbox: Alipay messages have no msg_signature")
	case f.TamperCiphertext && a.Messages.AESKey == "":
		return nil, errors.New("sandbox: tamper_ciphertext needs an app with an AES key")
	case !alipayMsgTypeRE.MatchString(req.Type):
		return nil, fmt.Errorf("sandbox: invalid message type %q", req.Type)
	}
	now := s.now()
	msg := alipayMessage{
		MsgType: req.Type, FromUserID: u.AlipayUserID, FromOpenID: u.AlipayOpenID,
		ToAppID: a.AppID, CreateTime: req.CreateTime, Content: req.Content,
	}
	msgID := req.MsgID
	if msgID == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		msgID = int64(binary.BigEndian.Uint64(b[:])>>1) | 1
	}
	msg.MsgID = strconv.FormatInt(msgID, 10)
	if msg.CreateTime == 0 {
		msg.CreateTime = now.Unix()
	}
	if f.ForeignAppID {
		msg.ToAppID = alipayForeignAppID
	}
	switch req.Type {
	case "text":
		if req.Content == "" {
			return nil, errors.New("sandbox: a text message needs content")
		}
	case "image":
		msg.MediaID = req.MediaID
		if msg.MediaID == "" {
			msg.MediaID = "A*" + randomHex(12)
		}
	case "miniprogrampage":
		msg.Title, msg.PagePath, msg.ThumbMediaID = req.Title, req.PagePath, req.ThumbMediaID
	case "event":
		msg.Event, msg.SessionFrom = req.Event, req.SessionFrom
		if msg.Event == "" {
			msg.Event = "user_enter_tempsession"
		}
	}
	plain, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	ts := now
	if f.StaleTimestamp {
		ts = now.Add(-alipayStaleBy)
	}
	v := url.Values{}
	v.Set("notify_id", alipayNotifyID(time.Unix(msg.CreateTime, 0), a.AppID, "msg", msg.MsgID))
	v.Set("utc_timestamp", strconv.FormatInt(ts.UnixMilli(), 10))
	v.Set("msg_method", AlipayMessageMethod)
	v.Set("app_id", a.AppID)
	v.Set("version", "1.1")
	v.Set("charset", "utf-8")
	v.Set("sign_type", "RSA2")
	v.Set("biz_content", string(plain))
	if a.Messages.AESKey != "" {
		key, err := base64.StdEncoding.DecodeString(a.Messages.AESKey)
		if err != nil {
			return nil, fmt.Errorf("sandbox: app %s: AES key: %w", a.ID, err)
		}
		ct, err := alipayEncrypt(key, plain)
		if err != nil {
			return nil, err
		}
		if f.TamperCiphertext {
			raw, _ := base64.StdEncoding.DecodeString(ct)
			raw[len(raw)-1] ^= 0x01
			ct = base64.StdEncoding.EncodeToString(raw)
		}
		v.Set("biz_content", ct)
		v.Set("encrypt_type", "AES")
	}
	s.alipaySignForm(a, v, true, f.BadSignature)
	details := map[string]any{"msg_id": msg.MsgID, "notify_id": v.Get("notify_id"), "msg_method": AlipayMessageMethod}
	rep, err := s.alipaySend(ctx, a.CallbackURL+"/messages", v, f, details)
	if err != nil {
		return nil, err
	}
	rep.Sent = plain
	return rep, nil
}

// alipayNotifyID derives a notify_id (date, "00222", 21 digits) from what
// the notification is about, so re-sends of one notification share it.
func alipayNotifyID(day time.Time, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	n := new(big.Int).SetBytes(sum[:16])
	n.Mod(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(21), nil))
	digits := n.String()
	return day.In(alipayZone).Format("20060102") + "00222" + strings.Repeat("0", 21-len(digits)) + digits
}

// alipaySignContent is the string Alipay signs: non-empty parameters except
// those excluded, sorted by key, raw k=v joined by '&' (no URL encoding).
func alipaySignContent(v url.Values, exclude ...string) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		skip := v.Get(k) == ""
		for _, e := range exclude {
			skip = skip || k == e
		}
		if !skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v.Get(k))
	}
	return b.String()
}

// alipayRSASign is RSA2: PKCS#1 v1.5 over SHA-256, base64.
func alipayRSASign(key *rsa.PrivateKey, content []byte) (string, error) {
	h := sha256.Sum256(content)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

func alipayRSAVerify(pub *rsa.PublicKey, content, sig []byte) error {
	if pub == nil {
		return errors.New("sandbox: no public key")
	}
	h := sha256.Sum256(content)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig)
}

// alipayEncrypt is Alipay's content encryption: AES-CBC with a zero IV and
// PKCS#7 padding, base64.
func alipayEncrypt(key, plain []byte) (string, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := make([]byte, len(plain)+pad)
	copy(buf, plain)
	for i := len(plain); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf), nil
}

func alipayDecrypt(key []byte, b64 string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("sandbox: ciphertext is not whole blocks")
	}
	cipher.NewCBCDecrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(ct, ct)
	pad := int(ct[len(ct)-1])
	if pad < 1 || pad > aes.BlockSize {
		return nil, errors.New("sandbox: bad padding")
	}
	for _, b := range ct[len(ct)-pad:] {
		if int(b) != pad {
			return nil, errors.New("sandbox: bad padding")
		}
	}
	return ct[:len(ct)-pad], nil
}

// alipayParseYuan parses "digits[.d[d]]" yuan (at most 9 integer digits)
// into fen. It is deliberately separate from internal/money.
func alipayParseYuan(s string) (int64, bool) {
	if !alipayYuanRE.MatchString(s) {
		return 0, false
	}
	whole, frac, _ := strings.Cut(s, ".")
	y, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, false
	}
	frac = (frac + "00")[:2]
	f, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return 0, false
	}
	return y*100 + f, true
}

// alipayFormatYuan formats fen as yuan with two decimals (a fault may ask
// for a negative amount).
func alipayFormatYuan(fen int64) string {
	if fen < 0 {
		return "-" + alipayFormatYuan(-fen)
	}
	return fmt.Sprintf("%d.%02d", fen/100, fen%100)
}
