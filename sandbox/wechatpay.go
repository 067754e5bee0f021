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
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
)

// WeChat Pay API v3 simulation: the JSAPI order APIs, domestic refunds and
// platform certificates under /sandbox/wechatpay, with the real paths below.
// Every request must carry a valid merchant signature (checked here with the
// merchant's public key, independently of any SDK); every response is signed
// with the platform key. Per merchant the simulator keeps a ledger of orders,
// payments and refunds (enough to produce daily bills).

const (
	wechatPayAuthScheme = "WECHATPAY2-SHA256-RSA2048"
	// wechatPayClockSkew is how far a request's timestamp may be from now.
	wechatPayClockSkew = 5 * time.Minute
	// wechatPayRefundDelay is how long a refund stays PROCESSING.
	wechatPayRefundDelay = 100 * time.Millisecond
	// wechatPayNotifyTimeout bounds the delivery of automatic refund
	// notifications (sent after the API call that caused them returned).
	wechatPayNotifyTimeout = 30 * time.Second
	// wechatPayForeignMchID and wechatPayForeignAppID are what the
	// foreign_merchant / foreign_appid faults put in a notification.
	wechatPayForeignMchID = "1230000109"
	wechatPayForeignAppID = "wxd678efh567hg6787"
)

// WeChat Pay trade and refund states, as the platform names them.
const (
	wechatPayTradeNotPay  = "NOTPAY"
	wechatPayTradeSuccess = "SUCCESS"
	wechatPayTradeClosed  = "CLOSED"
	wechatPayTradeRefund  = "REFUND"

	wechatPayRefundProcessing = "PROCESSING"
	wechatPayRefundSuccess    = "SUCCESS"
)

var (
	wechatPayOutTradeNoRE  = regexp.MustCompile(`^[0-9A-Za-z_\-*]{6,32}$`)
	wechatPayOutRefundNoRE = regexp.MustCompile(`^[0-9A-Za-z_\-|*@]{1,64}$`)
	wechatPayZone          = time.FixedZone("CST", 8*3600)
)

// WeChatPayError is a failure the simulator answers instead of handling a
// WeChat Pay API call, e.g. to exercise retries on SYSTEM_ERROR.
type WeChatPayError struct {
	// API selects the call: jsapi_prepay, query_order, close_order, refund,
	// query_refund or certificates; empty matches any.
	API     string
	Status  int    // HTTP status, e.g. 500
	Code    string // e.g. SYSTEM_ERROR
	Message string
	// Times is how many calls fail (default 1).
	Times int
}

// WeChatPayRefundNotifyRequest asks the simulator to send a refund
// notification now, for an order that the platform has seen paid. With
// OutRefundNo naming an existing refund, that refund is settled and its
// notification (re)sent; otherwise a refund is made as from the merchant
// console, for Amount (default: all that is left) under OutRefundNo (default:
// generated), and announced to the order's notify_url. Combined with a
// dropped payment notification, this delivers a refund notice before the
// paid notice.
type WeChatPayRefundNotifyRequest struct {
	OutRefundNo string `json:"out_refund_no"`
	Amount      int64  `json:"amount"`
	Faults      Faults `json:"faults"`
}

type wechatPayState struct {
	mu       sync.Mutex
	ledgers  map[string]*wechatPayLedger      // by mchid
	failures injectedFailures[WeChatPayError] // by mchid
}

func newWeChatPayState() *wechatPayState {
	return &wechatPayState{ledgers: map[string]*wechatPayLedger{}}
}

// wechatPayLedger is one merchant's books. The lists keep creation order
// for bills; the maps index them.
type wechatPayLedger struct {
	orders     map[string]*wechatPayOrder // by out_trade_no
	orderList  []*wechatPayOrder
	refunds    map[string]*wechatPayRefund // by out_refund_no
	refundList []*wechatPayRefund
}

// ledger returns the merchant's ledger, creating it. Callers hold st.mu.
func (st *wechatPayState) ledger(mchID string) *wechatPayLedger {
	l := st.ledgers[mchID]
	if l == nil {
		l = &wechatPayLedger{orders: map[string]*wechatPayOrder{}, refunds: map[string]*wechatPayRefund{}}
		st.ledgers[mchID] = l
	}
	return l
}

// wechatPayOrderParams are the prepay parameters an order was created with;
// a prepay with the same out_trade_no must repeat them exactly.
type wechatPayOrderParams struct {
	AppID       string
	Description string
	Total       int64
	Currency    string
	OpenID      string
	Attach      string
	NotifyURL   string
	TimeExpire  string
}

type wechatPayOrder struct {
	wechatPayOrderParams
	MchID      string
	OutTradeNo string
	PrepayID   string
	ExpiresAt  time.Time // zero: no time_expire
	CreatedAt  time.Time

	State         string // NOTPAY, SUCCESS, REFUND, CLOSED
	TransactionID string
	BankType      string
	PaidAt        time.Time
	// NotifyID is the payment notification's id, the same on every resend.
	NotifyID string
	// Refunded is the sum of the order's refunds, processing or done.
	Refunded int64
}

type wechatPayRefund struct {
	MchID         string
	OutTradeNo    string
	TransactionID string
	OutRefundNo   string
	RefundID      string
	NotifyURL     string
	Amount        int64
	Total         int64
	Status        string // PROCESSING, SUCCESS
	CreatedAt     time.Time
	SucceededAt   time.Time
	NotifyID      string
	// Notified is set once the refund's notification has been sent.
	Notified bool
}

// settle moves a PROCESSING refund to SUCCESS when its delay has passed
// (or at once with force). Callers hold st.mu.
func (st *wechatPayState) settle(l *wechatPayLedger, r *wechatPayRefund, now time.Time, force bool) {
	if r.Status != wechatPayRefundProcessing {
		return
	}
	due := r.CreatedAt.Add(wechatPayRefundDelay)
	if !force && now.Before(due) {
		return
	}
	r.Status, r.SucceededAt = wechatPayRefundSuccess, now
	if o := l.orders[r.OutTradeNo]; o != nil && o.State == wechatPayTradeSuccess {
		o.State = wechatPayTradeRefund
	}
}

// wechatPayCall is an authenticated API call.
type wechatPayCall struct {
	c        *fiber.Ctx
	m        *WeChatPayMerchant
	apps     []*App
	mchID    string
	body     []byte
	accepted string // the Wechatpay-Serial the caller asked to be answered with
}

// wechatPayReply is what an API handler answers: a status and a JSON value
// (nil for an empty body).
type wechatPayReply struct {
	status int
	body   any
}

func wechatPayFail(status int, code, message string) wechatPayReply {
	return wechatPayReply{status: status, body: map[string]string{"code": code, "message": message}}
}

func (s *Sandbox) mountWeChatPay(r fiber.Router) {
	r.Post("/v3/pay/transactions/jsapi", s.wechatPayAPI("jsapi_prepay", s.wechatPayPrepay))
	r.Get("/v3/pay/transactions/out-trade-no/:no", s.wechatPayAPI("query_order", s.wechatPayQuery))
	r.Post("/v3/pay/transactions/out-trade-no/:no/close", s.wechatPayAPI("close_order", s.wechatPayClose))
	r.Post("/v3/refund/domestic/refunds", s.wechatPayAPI("refund", s.wechatPayCreateRefund))
	r.Get("/v3/refund/domestic/refunds/:no", s.wechatPayAPI("query_refund", s.wechatPayQueryRefund))
	r.Get("/v3/certificates", s.wechatPayAPI("certificates", s.wechatPayCertificates))
	s.mountWeChatPayBill(r)
}

// wechatPayAPI authenticates the merchant's request, applies injected
// failures, runs h and signs its answer.
func (s *Sandbox) wechatPayAPI(api string, h func(*wechatPayCall) wechatPayReply) fiber.Handler {
	return func(c *fiber.Ctx) error {
		call, fail := s.wechatPayAuthenticate(c)
		if call == nil {
			// Unknown merchant: there is no platform key to sign with.
			raw, _ := json.Marshal(fail.body)
			c.Set("Request-Id", randomHex(16))
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Status(fail.status).Send(raw)
		}
		rep := fail
		if rep.status == 0 {
			if f, ok := s.wechatpay.failures.take(call.mchID, api); ok {
				rep = wechatPayFail(f.Status, f.Code, f.Message)
			} else {
				rep = h(call)
			}
		}
		var raw []byte
		if rep.body != nil {
			var err error
			if raw, err = json.Marshal(rep.body); err != nil {
				return fmt.Errorf("sandbox: wechatpay: encode answer: %w", err)
			}
		}
		ts, nonce, serial, sig := s.wechatPaySign(call.m, call.accepted, raw)
		c.Set("Wechatpay-Timestamp", ts)
		c.Set("Wechatpay-Nonce", nonce)
		c.Set("Wechatpay-Serial", serial)
		c.Set("Wechatpay-Signature", sig)
		c.Set("Request-Id", randomHex(16))
		if raw != nil {
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		}
		return c.Status(rep.status).Send(raw)
	}
}

// wechatPayAuthenticate checks the Authorization header. It returns a nil
// call when the merchant is unknown; a call and a non-zero reply when the
// merchant is known but the signature is not valid.
func (s *Sandbox) wechatPayAuthenticate(c *fiber.Ctx) (*wechatPayCall, wechatPayReply) {
	// Fiber's strings alias its request buffers: copy what outlives the call
	// (the merchant id keys the ledger and lands in stored orders).
	auth, err := wechatPayParseAuth(strings.Clone(c.Get(fiber.HeaderAuthorization)))
	if err != nil {
		return nil, wechatPayFail(http.StatusUnauthorized, "SIGN_ERROR", "Authorization: "+err.Error())
	}
	apps := s.appsWhere(func(a *App) bool {
		return a.Platform == WeChat && a.WeChatPay != nil && a.WeChatPay.MchID == auth.mchID
	})
	if len(apps) == 0 {
		return nil, wechatPayFail(http.StatusBadRequest, "MCH_NOT_EXISTS", "商户号不存在")
	}
	call := &wechatPayCall{
		c: c, m: apps[0].WeChatPay, apps: apps, mchID: auth.mchID,
		body: append([]byte(nil), c.Body()...), accepted: strings.Clone(c.Get("Wechatpay-Serial")),
	}
	if auth.serial != call.m.MerchantSerial {
		return call, wechatPayFail(http.StatusUnauthorized, "SIGN_ERROR", "商户证书序列号有误")
	}
	ts, err := strconv.ParseInt(auth.timestamp, 10, 64)
	if err != nil || wechatPayAbs(s.now().Sub(time.Unix(ts, 0))) >= wechatPayClockSkew {
		return call, wechatPayFail(http.StatusUnauthorized, "SIGN_ERROR", "timestamp 与当前时间相差过大")
	}
	// The merchant signs the request URI as it sent it: the platform's path
	// and query, without the simulator's mount prefix.
	uri := c.OriginalURL()
	if i := strings.Index(uri, "/v3/"); i >= 0 {
		uri = uri[i:]
	}
	msg := c.Method() + "\n" + uri + "\n" + auth.timestamp + "\n" + auth.nonce + "\n" + string(call.body) + "\n"
	if !wechatPayVerify(call.m.MerchantKey, msg, auth.signature) {
		return call, wechatPayFail(http.StatusUnauthorized, "SIGN_ERROR", "签名错误")
	}
	return call, wechatPayReply{}
}

type wechatPayAuth struct {
	mchID, nonce, timestamp, serial, signature string
}

// wechatPayParseAuth parses `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",
// timestamp="…",serial_no="…",signature="…"`.
func wechatPayParseAuth(h string) (wechatPayAuth, error) {
	var a wechatPayAuth
	scheme, params, ok := strings.Cut(h, " ")
	if !ok || scheme != wechatPayAuthScheme {
		return a, errors.New("scheme must be " + wechatPayAuthScheme)
	}
	for part := range strings.SplitSeq(params, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return a, fmt.Errorf("malformed parameter %q", k)
		}
		v = v[1 : len(v)-1]
		switch k {
		case "mchid":
			a.mchID = v
		case "nonce_str":
			a.nonce = v
		case "timestamp":
			a.timestamp = v
		case "serial_no":
			a.serial = v
		case "signature":
			a.signature = v
		}
	}
	if a.mchID == "" || a.nonce == "" || a.timestamp == "" || a.serial == "" || a.signature == "" {
		return a, errors.New("mchid, nonce_str, timestamp, serial_no and signature are required")
	}
	return a, nil
}

// wechatPayVerify checks a base64 SHA256withRSA (PKCS #1 v1.5) signature.
func wechatPayVerify(pub *rsa.PublicKey, msg, signature string) bool {
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil || pub == nil {
		return false
	}
	sum := sha256.Sum256([]byte(msg))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil
}

// wechatPaySign signs "ts\nnonce\nbody\n" with the platform key and returns
// the header values. accepted is the serial the caller asked for (a
// Wechatpay-Serial request header); when the merchant has it the platform
// answers with it, otherwise with the merchant's SignWith choice.
func (s *Sandbox) wechatPaySign(m *WeChatPayMerchant, accepted string, body []byte) (ts, nonce, serial, sig string) {
	ts = strconv.FormatInt(s.now().Unix(), 10)
	nonce = wechatPayNonce(32)
	serial = wechatPaySerial(m, accepted)
	sig = wechatPayRSASign(m.PlatformKey, ts+"\n"+nonce+"\n"+string(body)+"\n")
	return ts, nonce, serial, sig
}

// wechatPaySerial picks the serial the platform signs with.
func wechatPaySerial(m *WeChatPayMerchant, accepted string) string {
	switch {
	case accepted != "" && accepted == m.PublicKeyID:
		return m.PublicKeyID
	case accepted != "" && accepted == m.PlatformSerial:
		return m.PlatformSerial
	case m.SignWith == "certificate" && m.PlatformSerial != "":
		return m.PlatformSerial
	case m.SignWith == "public_key" && m.PublicKeyID != "":
		return m.PublicKeyID
	case m.PublicKeyID != "":
		return m.PublicKeyID
	}
	return m.PlatformSerial
}

func wechatPayRSASign(key *rsa.PrivateKey, msg string) string {
	sum := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic("sandbox: wechatpay: sign: " + err.Error())
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// wechatPayNonce returns n random characters of [0-9A-Za-z]; 12 of them
// are an AES-GCM nonce.
func wechatPayNonce(n int) string {
	const symbols = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("sandbox: crypto/rand: " + err.Error())
	}
	for i := range b {
		b[i] = symbols[int(b[i])%len(symbols)]
	}
	return string(b)
}

// wechatPayDigits returns n random decimal digits.
func wechatPayDigits(n int) string {
	var b strings.Builder
	for range n {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			panic("sandbox: crypto/rand: " + err.Error())
		}
		b.WriteByte(byte('0' + d.Int64()))
	}
	return b.String()
}

// wechatPayEncrypt seals plaintext with AEAD_AES_256_GCM under the APIv3
// key and returns the base64 ciphertext (with its tag).
func wechatPayEncrypt(key, nonce, associatedData string, plaintext []byte) (string, error) {
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		return "", fmt.Errorf("sandbox: wechatpay: APIv3 key: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return "", fmt.Errorf("sandbox: wechatpay: GCM: %w", err)
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))), nil
}

func wechatPayTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(wechatPayZone).Format(time.RFC3339)
}

func wechatPayAbs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// FailWeChatPay makes the next e.Times calls (default 1) to merchant mchID's
// e.API answer e instead of being handled. The answer is signed like any
// other.
func (s *Sandbox) FailWeChatPay(mchID string, e WeChatPayError) {
	s.wechatpay.failures.add(mchID, e.API, e.Times, e)
}

// --- JSAPI prepay ---

type wechatPayPrepayBody struct {
	AppID       string `json:"appid"`
	MchID       string `json:"mchid"`
	Description string `json:"description"`
	OutTradeNo  string `json:"out_trade_no"`
	TimeExpire  string `json:"time_expire"`
	Attach      string `json:"attach"`
	NotifyURL   string `json:"notify_url"`
	Amount      *struct {
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
	Payer *struct {
		OpenID string `json:"openid"`
	} `json:"payer"`
}

func (s *Sandbox) wechatPayPrepay(call *wechatPayCall) wechatPayReply {
	var b wechatPayPrepayBody
	if err := json.Unmarshal(call.body, &b); err != nil {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "请求体不是合法的JSON: "+err.Error())
	}
	if rep, bad := wechatPayCheckPrepay(call, &b); bad {
		return rep
	}
	var expires time.Time
	if b.TimeExpire != "" {
		t, err := time.Parse(time.RFC3339, b.TimeExpire)
		if err != nil {
			return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "time_expire 格式错误")
		}
		expires = t
	}
	params := wechatPayOrderParams{
		AppID: b.AppID, Description: b.Description, Total: b.Amount.Total, Currency: "CNY",
		OpenID: b.Payer.OpenID, Attach: b.Attach, NotifyURL: b.NotifyURL, TimeExpire: b.TimeExpire,
	}
	st, now := s.wechatpay, s.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.ledger(call.mchID)
	if o := l.orders[b.OutTradeNo]; o != nil {
		switch {
		case o.wechatPayOrderParams != params:
			return wechatPayFail(http.StatusForbidden, "OUT_TRADE_NO_USED", "商户订单号重复")
		case o.State == wechatPayTradeClosed:
			return wechatPayFail(http.StatusBadRequest, "ORDER_CLOSED", "订单已关闭")
		case o.State != wechatPayTradeNotPay:
			return wechatPayFail(http.StatusBadRequest, "ORDERPAID", "该订单已支付")
		}
		return wechatPayReply{status: http.StatusOK, body: map[string]string{"prepay_id": o.PrepayID}}
	}
	o := &wechatPayOrder{
		wechatPayOrderParams: params, MchID: call.mchID, OutTradeNo: b.OutTradeNo,
		PrepayID:  "wx" + now.In(wechatPayZone).Format("20060102150405") + randomHex(10),
		ExpiresAt: expires, CreatedAt: now, State: wechatPayTradeNotPay,
	}
	l.orders[o.OutTradeNo] = o
	l.orderList = append(l.orderList, o)
	return wechatPayReply{status: http.StatusOK, body: map[string]string{"prepay_id": o.PrepayID}}
}

// wechatPayCheckPrepay applies the platform's parameter rules.
func wechatPayCheckPrepay(call *wechatPayCall, b *wechatPayPrepayBody) (wechatPayReply, bool) {
	bad := func(code, msg string) (wechatPayReply, bool) {
		return wechatPayFail(http.StatusBadRequest, code, msg), true
	}
	switch {
	case b.AppID == "" || b.MchID == "" || b.Description == "" || b.OutTradeNo == "" ||
		b.NotifyURL == "" || b.Amount == nil || b.Payer == nil:
		return bad("PARAM_ERROR", "appid, mchid, description, out_trade_no, notify_url, amount, payer 为必填")
	case b.MchID != call.mchID:
		return bad("PARAM_ERROR", "mchid 与请求签名的商户号不一致")
	case !wechatPayAppOf(call.apps, b.AppID):
		return bad("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
	case utf8.RuneCountInString(b.Description) > 127:
		return bad("PARAM_ERROR", "description 超过127个字符")
	case !wechatPayOutTradeNoRE.MatchString(b.OutTradeNo):
		return bad("PARAM_ERROR", "out_trade_no 须为6-32位数字、大小写字母或_-*")
	case b.Amount.Total <= 0:
		return bad("PARAM_ERROR", "amount.total 须为正整数")
	case b.Amount.Currency != "" && b.Amount.Currency != "CNY":
		return bad("PARAM_ERROR", "amount.currency 仅支持CNY")
	case b.Payer.OpenID == "":
		return bad("PARAM_ERROR", "payer.openid 为必填")
	case utf8.RuneCountInString(b.Attach) > 128:
		return bad("PARAM_ERROR", "attach 超过128个字符")
	}
	u, err := url.Parse(b.NotifyURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return bad("PARAM_ERROR", "notify_url 须为不带参数的http(s)地址")
	}
	return wechatPayReply{}, false
}

func wechatPayAppOf(apps []*App, appID string) bool {
	for _, a := range apps {
		if a.AppID == appID {
			return true
		}
	}
	return false
}

// --- query and close ---

// wechatPayTransaction is a transaction as the query API and the payment
// notification show it.
type wechatPayTransaction struct {
	AppID          string            `json:"appid"`
	MchID          string            `json:"mchid"`
	OutTradeNo     string            `json:"out_trade_no"`
	TransactionID  string            `json:"transaction_id,omitempty"`
	TradeType      string            `json:"trade_type,omitempty"`
	TradeState     string            `json:"trade_state"`
	TradeStateDesc string            `json:"trade_state_desc"`
	BankType       string            `json:"bank_type,omitempty"`
	Attach         string            `json:"attach"`
	SuccessTime    string            `json:"success_time,omitempty"`
	Payer          wechatPayTxPayer  `json:"payer"`
	Amount         wechatPayTxAmount `json:"amount"`
}

type wechatPayTxPayer struct {
	OpenID string `json:"openid"`
}

type wechatPayTxAmount struct {
	Total         int64  `json:"total"`
	PayerTotal    *int64 `json:"payer_total,omitempty"`
	Currency      string `json:"currency"`
	PayerCurrency string `json:"payer_currency"`
}

var wechatPayStateDesc = map[string]string{
	wechatPayTradeNotPay: "订单未支付", wechatPayTradeSuccess: "支付成功", wechatPayTradeRefund: "转入退款", wechatPayTradeClosed: "订单已关闭",
}

// transaction renders o. Callers hold st.mu.
func (o *wechatPayOrder) transaction() wechatPayTransaction {
	t := wechatPayTransaction{
		AppID: o.AppID, MchID: o.MchID, OutTradeNo: o.OutTradeNo,
		TradeState: o.State, TradeStateDesc: wechatPayStateDesc[o.State], Attach: o.Attach,
		Payer:  wechatPayTxPayer{OpenID: o.OpenID},
		Amount: wechatPayTxAmount{Total: o.Total, Currency: o.Currency, PayerCurrency: o.Currency},
	}
	if o.TransactionID != "" {
		total := o.Total
		t.TransactionID, t.TradeType, t.BankType = o.TransactionID, "JSAPI", o.BankType
		t.SuccessTime, t.Amount.PayerTotal = wechatPayTime(o.PaidAt), &total
	}
	return t
}

// wechatPayPathParam is the :no path parameter, unescaped.
func wechatPayPathParam(call *wechatPayCall) (string, bool) {
	no, err := url.PathUnescape(call.c.Params("no"))
	return no, err == nil
}

func (s *Sandbox) wechatPayQuery(call *wechatPayCall) wechatPayReply {
	no, ok := wechatPayPathParam(call)
	if !ok {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "out_trade_no 格式错误")
	}
	if call.c.Query("mchid") != call.mchID {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "mchid 与请求签名的商户号不一致")
	}
	st := s.wechatpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.ledger(call.mchID).orders[no]
	if o == nil {
		return wechatPayFail(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在")
	}
	return wechatPayReply{status: http.StatusOK, body: o.transaction()}
}

func (s *Sandbox) wechatPayClose(call *wechatPayCall) wechatPayReply {
	no, ok := wechatPayPathParam(call)
	if !ok {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "out_trade_no 格式错误")
	}
	var b struct {
		MchID string `json:"mchid"`
	}
	if err := json.Unmarshal(call.body, &b); err != nil || b.MchID != call.mchID {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "mchid 与请求签名的商户号不一致")
	}
	st := s.wechatpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.ledger(call.mchID).orders[no]
	switch {
	case o == nil:
		return wechatPayFail(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在")
	case o.State == wechatPayTradeSuccess || o.State == wechatPayTradeRefund:
		return wechatPayFail(http.StatusBadRequest, "ORDERPAID", "订单已支付，不能关闭")
	case o.State == wechatPayTradeNotPay:
		o.State = wechatPayTradeClosed
	}
	return wechatPayReply{status: http.StatusNoContent}
}

// --- refunds ---

type wechatPayRefundBody struct {
	TransactionID string `json:"transaction_id"`
	OutTradeNo    string `json:"out_trade_no"`
	OutRefundNo   string `json:"out_refund_no"`
	Reason        string `json:"reason"`
	NotifyURL     string `json:"notify_url"`
	Amount        *struct {
		Refund   int64  `json:"refund"`
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
}

// wechatPayRefundView is a refund as the refund APIs show it.
type wechatPayRefundView struct {
	RefundID            string                `json:"refund_id"`
	OutRefundNo         string                `json:"out_refund_no"`
	TransactionID       string                `json:"transaction_id"`
	OutTradeNo          string                `json:"out_trade_no"`
	Channel             string                `json:"channel"`
	UserReceivedAccount string                `json:"user_received_account"`
	SuccessTime         string                `json:"success_time,omitempty"`
	CreateTime          string                `json:"create_time"`
	Status              string                `json:"status"`
	FundsAccount        string                `json:"funds_account"`
	Amount              wechatPayRefundAmount `json:"amount"`
}

type wechatPayRefundAmount struct {
	Total            int64  `json:"total"`
	Refund           int64  `json:"refund"`
	PayerTotal       int64  `json:"payer_total"`
	PayerRefund      int64  `json:"payer_refund"`
	SettlementRefund int64  `json:"settlement_refund"`
	SettlementTotal  int64  `json:"settlement_total"`
	DiscountRefund   int64  `json:"discount_refund"`
	Currency         string `json:"currency"`
}

// wechatPayRefundNotice is the plaintext of a refund notification.
type wechatPayRefundNotice struct {
	MchID               string `json:"mchid"`
	OutTradeNo          string `json:"out_trade_no"`
	TransactionID       string `json:"transaction_id"`
	OutRefundNo         string `json:"out_refund_no"`
	RefundID            string `json:"refund_id"`
	RefundStatus        string `json:"refund_status"`
	SuccessTime         string `json:"success_time,omitempty"`
	UserReceivedAccount string `json:"user_received_account"`
	Amount              struct {
		Total       int64 `json:"total"`
		Refund      int64 `json:"refund"`
		PayerTotal  int64 `json:"payer_total"`
		PayerRefund int64 `json:"payer_refund"`
	} `json:"amount"`
}

func (r *wechatPayRefund) view() wechatPayRefundView {
	return wechatPayRefundView{
		RefundID: r.RefundID, OutRefundNo: r.OutRefundNo, TransactionID: r.TransactionID, OutTradeNo: r.OutTradeNo,
		Channel: "ORIGINAL", UserReceivedAccount: "支付用户零钱", SuccessTime: wechatPayTime(r.SucceededAt),
		CreateTime: wechatPayTime(r.CreatedAt), Status: r.Status, FundsAccount: "AVAILABLE",
		Amount: wechatPayRefundAmount{
			Total: r.Total, Refund: r.Amount, PayerTotal: r.Total, PayerRefund: r.Amount,
			SettlementRefund: r.Amount, SettlementTotal: r.Total, Currency: "CNY",
		},
	}
}

func (r *wechatPayRefund) notice() wechatPayRefundNotice {
	n := wechatPayRefundNotice{
		MchID: r.MchID, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID, OutRefundNo: r.OutRefundNo,
		RefundID: r.RefundID, RefundStatus: r.Status, SuccessTime: wechatPayTime(r.SucceededAt),
		UserReceivedAccount: "支付用户零钱",
	}
	n.Amount.Total, n.Amount.Refund, n.Amount.PayerTotal, n.Amount.PayerRefund = r.Total, r.Amount, r.Total, r.Amount
	return n
}

func (s *Sandbox) wechatPayCreateRefund(call *wechatPayCall) wechatPayReply {
	var b wechatPayRefundBody
	if err := json.Unmarshal(call.body, &b); err != nil {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "请求体不是合法的JSON: "+err.Error())
	}
	switch {
	case b.OutTradeNo == "" && b.TransactionID == "":
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "transaction_id 和 out_trade_no 必须二选一")
	case !wechatPayOutRefundNoRE.MatchString(b.OutRefundNo):
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "out_refund_no 格式错误")
	case b.Amount == nil || b.Amount.Refund <= 0 || b.Amount.Total <= 0:
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "amount.refund 和 amount.total 须为正整数")
	case b.Amount.Currency != "CNY":
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "amount.currency 须为CNY")
	case utf8.RuneCountInString(b.Reason) > 80:
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "reason 超过80个字符")
	}
	if b.NotifyURL != "" {
		if u, err := url.Parse(b.NotifyURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "notify_url 须为http(s)地址")
		}
	}
	st, now := s.wechatpay, s.now()
	st.mu.Lock()
	l := st.ledger(call.mchID)
	o := l.orders[b.OutTradeNo]
	if b.OutTradeNo == "" {
		o = wechatPayOrderByTransaction(l, b.TransactionID)
	}
	if r := l.refunds[b.OutRefundNo]; r != nil {
		defer st.mu.Unlock()
		if o == nil || r.OutTradeNo != o.OutTradeNo || r.Amount != b.Amount.Refund {
			return wechatPayFail(http.StatusBadRequest, "INVALID_REQUEST", "退款单号已被使用，且参数与首次请求不一致")
		}
		st.settle(l, r, now, false)
		return wechatPayReply{status: http.StatusOK, body: r.view()}
	}
	switch {
	case o == nil:
		st.mu.Unlock()
		return wechatPayFail(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "订单不存在")
	case o.State != wechatPayTradeSuccess && o.State != wechatPayTradeRefund:
		st.mu.Unlock()
		return wechatPayFail(http.StatusBadRequest, "INVALID_REQUEST", "订单未支付，不能退款")
	case b.Amount.Total != o.Total:
		st.mu.Unlock()
		return wechatPayFail(http.StatusBadRequest, "INVALID_REQUEST", "amount.total 与订单金额不一致")
	case b.Amount.Refund > o.Total-o.Refunded:
		st.mu.Unlock()
		return wechatPayFail(http.StatusForbidden, "NOT_ENOUGH", "申请退款金额超过订单可退金额")
	}
	r := &wechatPayRefund{
		MchID: call.mchID, OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID, OutRefundNo: b.OutRefundNo,
		RefundID: "50" + wechatPayDigits(27), NotifyURL: b.NotifyURL,
		Amount: b.Amount.Refund, Total: o.Total, Status: wechatPayRefundProcessing, CreatedAt: now,
		NotifyID: wechatPayNotifyID(now),
	}
	o.Refunded += r.Amount
	l.refunds[r.OutRefundNo] = r
	l.refundList = append(l.refundList, r)
	view := r.view()
	st.mu.Unlock()
	m := call.m
	go s.wechatPaySettleLater(m, r)
	return wechatPayReply{status: http.StatusOK, body: view}
}

func wechatPayOrderByTransaction(l *wechatPayLedger, transactionID string) *wechatPayOrder {
	for _, o := range l.orderList {
		if o.TransactionID != "" && o.TransactionID == transactionID {
			return o
		}
	}
	return nil
}

// wechatPaySettleLater completes a refund after wechatPayRefundDelay and
// sends its notification to the refund's notify_url, if it has one and no
// notification was sent yet.
func (s *Sandbox) wechatPaySettleLater(m *WeChatPayMerchant, r *wechatPayRefund) {
	time.Sleep(wechatPayRefundDelay)
	st := s.wechatpay
	st.mu.Lock()
	st.settle(st.ledger(r.MchID), r, s.now(), true)
	if r.NotifyURL == "" || r.Notified {
		st.mu.Unlock()
		return
	}
	r.Notified = true
	notice, url, id := r.notice(), r.NotifyURL, r.NotifyID
	st.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), wechatPayNotifyTimeout)
	defer cancel()
	if _, err := s.wechatPayRefundNotify(ctx, m, url, id, notice, Faults{}); err != nil {
		s.log.Warn("sandbox: wechatpay: refund notification", "out_refund_no", notice.OutRefundNo, "err", err)
	}
}

func (s *Sandbox) wechatPayQueryRefund(call *wechatPayCall) wechatPayReply {
	no, ok := wechatPayPathParam(call)
	if !ok {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "out_refund_no 格式错误")
	}
	st := s.wechatpay
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.ledger(call.mchID)
	r := l.refunds[no]
	if r == nil {
		return wechatPayFail(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "退款单不存在")
	}
	st.settle(l, r, s.now(), false)
	return wechatPayReply{status: http.StatusOK, body: r.view()}
}

// --- platform certificates ---

func (s *Sandbox) wechatPayCertificates(call *wechatPayCall) wechatPayReply {
	m := call.m
	if m.PlatformCert == nil {
		return wechatPayFail(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "商户未启用平台证书，请使用微信支付公钥")
	}
	pemText := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.PlatformCert.Raw})
	nonce := wechatPayNonce(12)
	ct, err := wechatPayEncrypt(m.APIv3Key, nonce, "certificate", pemText)
	if err != nil {
		return wechatPayFail(http.StatusInternalServerError, "SYSTEM_ERROR", err.Error())
	}
	return wechatPayReply{status: http.StatusOK, body: map[string]any{"data": []map[string]any{{
		"serial_no":      m.PlatformSerial,
		"effective_time": wechatPayTime(m.PlatformCert.NotBefore),
		"expire_time":    wechatPayTime(m.PlatformCert.NotAfter),
		"encrypt_certificate": map[string]string{
			"algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate", "ciphertext": ct,
		},
	}}}}
}

// --- paying and notifications ---

func wechatPayNotifyID(now time.Time) string {
	return "EV-" + now.In(wechatPayZone).Format("20060102150405") + wechatPayDigits(6)
}

// payWeChat has the order's payer pay it. The first call charges (the
// ledger records the payment); later calls charge nothing and resend the
// same notification, as the platform retries. Closed, expired and unknown
// orders cannot be paid.
func (s *Sandbox) payWeChat(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	m := a.WeChatPay
	if m == nil {
		return nil, fmt.Errorf("sandbox: app %s has no WeChat Pay merchant", a.ID)
	}
	st, now := s.wechatpay, s.now()
	st.mu.Lock()
	o := st.ledger(m.MchID).orders[outTradeNo]
	switch {
	case o == nil || o.AppID != a.AppID:
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: wechatpay: no order %q for app %s", outTradeNo, a.ID)
	case o.State == wechatPayTradeClosed:
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: wechatpay: order %q is closed", outTradeNo)
	case o.State == wechatPayTradeNotPay && !o.ExpiresAt.IsZero() && now.After(o.ExpiresAt):
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: wechatpay: order %q expired at %s", outTradeNo, wechatPayTime(o.ExpiresAt))
	case o.State == wechatPayTradeNotPay:
		o.State, o.PaidAt, o.BankType = wechatPayTradeSuccess, now, "OTHERS"
		o.TransactionID = "42000" + now.In(wechatPayZone).Format("20060102") + wechatPayDigits(15)
		o.NotifyID = wechatPayNotifyID(now)
	}
	tx := o.transaction()
	// The notification describes the payment, whatever happened since.
	tx.TradeState, tx.TradeStateDesc = wechatPayTradeSuccess, wechatPayStateDesc[wechatPayTradeSuccess]
	notifyURL, id := o.NotifyURL, o.NotifyID
	st.mu.Unlock()

	if f.Amount != nil {
		amount := *f.Amount
		tx.Amount.Total, tx.Amount.PayerTotal = amount, &amount
	}
	if f.ForeignMerchant {
		tx.MchID = wechatPayForeignMchID
	}
	if f.ForeignAppID {
		tx.AppID = wechatPayForeignAppID
	}
	plaintext, err := json.Marshal(tx)
	if err != nil {
		return nil, fmt.Errorf("sandbox: wechatpay: encode transaction: %w", err)
	}
	rep, err := s.wechatPayNotify(ctx, m, notifyURL, wechatPayNotification{
		id: id, eventType: "TRANSACTION.SUCCESS", summary: "支付成功", originalType: "transaction",
	}, plaintext, f)
	if err != nil {
		return nil, err
	}
	rep.Details = map[string]any{
		"out_trade_no": tx.OutTradeNo, "transaction_id": tx.TransactionID, "notification_id": id,
		"event_type": "TRANSACTION.SUCCESS",
	}
	return rep, nil
}

// WeChatPayRefundNotify sends a refund notification for order outTradeNo of
// app a now; see WeChatPayRefundNotifyRequest.
func (s *Sandbox) WeChatPayRefundNotify(ctx context.Context, a *App, outTradeNo string, req WeChatPayRefundNotifyRequest) (*Report, error) {
	m := a.WeChatPay
	if a.Platform != WeChat || m == nil {
		return nil, fmt.Errorf("sandbox: app %s has no WeChat Pay merchant", a.ID)
	}
	st, now := s.wechatpay, s.now()
	st.mu.Lock()
	l := st.ledger(m.MchID)
	o := l.orders[outTradeNo]
	if o == nil || o.AppID != a.AppID {
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: wechatpay: no order %q for app %s", outTradeNo, a.ID)
	}
	r := l.refunds[req.OutRefundNo]
	switch {
	case r != nil && r.OutTradeNo != outTradeNo:
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: wechatpay: refund %q belongs to order %q", req.OutRefundNo, r.OutTradeNo)
	case r == nil && o.State != wechatPayTradeSuccess && o.State != wechatPayTradeRefund:
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: wechatpay: order %q is not paid", outTradeNo)
	case r == nil:
		amount := req.Amount
		if amount == 0 {
			amount = o.Total - o.Refunded
		}
		if amount <= 0 || amount > o.Total-o.Refunded {
			st.mu.Unlock()
			return nil, fmt.Errorf("sandbox: wechatpay: order %q has %d fen left to refund, not %d", outTradeNo, o.Total-o.Refunded, amount)
		}
		no := req.OutRefundNo
		if no == "" {
			no = "RF" + randomHex(12)
		}
		r = &wechatPayRefund{
			MchID: m.MchID, OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID, OutRefundNo: no,
			RefundID: "50" + wechatPayDigits(27), Amount: amount, Total: o.Total,
			Status: wechatPayRefundProcessing, CreatedAt: now, NotifyID: wechatPayNotifyID(now),
		}
		o.Refunded += amount
		l.refunds[no] = r
		l.refundList = append(l.refundList, r)
	}
	st.settle(l, r, now, true)
	r.Notified = true
	notifyURL := r.NotifyURL
	if notifyURL == "" {
		notifyURL = o.NotifyURL
	}
	notice, id := r.notice(), r.NotifyID
	st.mu.Unlock()

	if req.Faults.Amount != nil {
		notice.Amount.Refund, notice.Amount.PayerRefund = *req.Faults.Amount, *req.Faults.Amount
	}
	if req.Faults.ForeignMerchant {
		notice.MchID = wechatPayForeignMchID
	}
	rep, err := s.wechatPayRefundNotify(ctx, m, notifyURL, id, notice, req.Faults)
	if err != nil {
		return nil, err
	}
	rep.Details = map[string]any{
		"out_trade_no": notice.OutTradeNo, "out_refund_no": notice.OutRefundNo, "refund_id": notice.RefundID,
		"notification_id": id, "event_type": "REFUND.SUCCESS",
	}
	return rep, nil
}

func (s *Sandbox) wechatPayRefundNotify(ctx context.Context, m *WeChatPayMerchant, notifyURL, id string, n wechatPayRefundNotice, f Faults) (*Report, error) {
	plaintext, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("sandbox: wechatpay: encode refund: %w", err)
	}
	return s.wechatPayNotify(ctx, m, notifyURL, wechatPayNotification{
		id: id, eventType: "REFUND." + n.RefundStatus, summary: "退款成功", originalType: "refund",
	}, plaintext, f)
}

func (s *Sandbox) handleWeChatPayRefundNotify(c *fiber.Ctx) error {
	a, err := s.controlApp(c)
	if err != nil {
		return err
	}
	var req WeChatPayRefundNotifyRequest
	if len(strings.TrimSpace(string(c.Body()))) > 0 {
		if err := json.Unmarshal(c.Body(), &req); err != nil {
			return fiber.NewError(fiber.StatusBadRequest, "invalid JSON: "+err.Error())
		}
	}
	rep, err := s.WeChatPayRefundNotify(c.UserContext(), a, c.Params("out_trade_no"), req)
	if err != nil {
		return fiber.NewError(fiber.StatusBadRequest, err.Error())
	}
	return c.JSON(rep)
}

// wechatPayNotification names one notification event.
type wechatPayNotification struct {
	id, eventType, summary, originalType string
}

// wechatPayNotify encrypts plaintext into a notification, signs it and
// delivers it to notifyURL, applying f.
func (s *Sandbox) wechatPayNotify(ctx context.Context, m *WeChatPayMerchant, notifyURL string, n wechatPayNotification, plaintext []byte, f Faults) (*Report, error) {
	now := s.now()
	nonce := wechatPayNonce(12)
	ct, err := wechatPayEncrypt(m.APIv3Key, nonce, n.originalType, plaintext)
	if err != nil {
		return nil, err
	}
	if f.TamperCiphertext {
		raw, _ := base64.StdEncoding.DecodeString(ct)
		raw[len(raw)/2] ^= 0x01
		ct = base64.StdEncoding.EncodeToString(raw)
	}
	body, err := json.Marshal(map[string]any{
		"id": n.id, "create_time": wechatPayTime(now), "resource_type": "encrypt-resource",
		"event_type": n.eventType, "summary": n.summary,
		"resource": map[string]string{
			"original_type": n.originalType, "algorithm": "AEAD_AES_256_GCM",
			"ciphertext": ct, "associated_data": n.originalType, "nonce": nonce,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: wechatpay: encode notification: %w", err)
	}
	signedAt := now
	if f.StaleTimestamp {
		signedAt = now.Add(-10 * time.Minute)
	}
	ts, sigNonce := strconv.FormatInt(signedAt.Unix(), 10), wechatPayNonce(32)
	sig := wechatPayRSASign(m.PlatformKey, ts+"\n"+sigNonce+"\n"+string(body)+"\n")
	if f.BadSignature {
		raw, _ := base64.StdEncoding.DecodeString(sig)
		raw[0] ^= 0x01
		sig = base64.StdEncoding.EncodeToString(raw)
	}
	if f.Truncate {
		body = body[:len(body)/2]
	}
	header := http.Header{}
	header.Set("Wechatpay-Timestamp", ts)
	header.Set("Wechatpay-Nonce", sigNonce)
	header.Set("Wechatpay-Signature", sig)
	header.Set("Wechatpay-Serial", wechatPaySerial(m, ""))
	header.Set("Wechatpay-Signature-Type", wechatPayAuthScheme)
	header.Set("Request-Id", randomHex(16))
	rep := s.sendWithFaults(ctx, f, func(ctx context.Context) Delivery {
		return s.deliver(ctx, notifyURL, fiber.MIMEApplicationJSON, header, body)
	})
	rep.Sent = plaintext
	return rep, nil
}
