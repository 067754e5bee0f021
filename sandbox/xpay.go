package sandbox

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// WeChat virtual payment (虚拟支付, xpay) simulation: the server APIs under
// /sandbox/wechat/xpay/<name> (query_user_balance, currency_pay,
// cancel_currency_pay, present_currency, query_order, refund_order,
// notify_provide_goods, download_bill), session-key checks
// (/wxa/checksession), and what wx.requestVirtualPayment does on the user's
// phone (the control route POST /sandbox/apps/{app}/users/{name}/virtual-payment).
// Orders and coin balances are kept per app and environment (0 production,
// 1 sandbox), and the platform's pushes (xpay_goods_deliver_notify,
// xpay_coin_pay_notify, xpay_refund_notify, xpay_complaint_notify) go to
// the app's message callback as message pushes, built and signed anew for
// every retry.
//
// Signatures, as WeChat checks them (written independently of
// adapters/wechat):
//
//	paySig    = hex(HMAC-SHA256(AppKey of signData.env, "requestVirtualPayment&" + signData))
//	signature = hex(HMAC-SHA256(session_key, signData))          the raw session_key string
//	pay_sig   = hex(HMAC-SHA256(AppKey of body.env, "/xpay/<name>&" + body))
//	signature = hex(HMAC-SHA256(session_key, body))              query_user_balance, currency_pay, cancel_currency_pay only

// XPayAccount is an app's virtual payment as the platform sees it (the
// console's 虚拟支付 settings).
type XPayAccount struct {
	OfferID string
	// AppKey signs production (env 0) requests, SandboxAppKey sandbox
	// (env 1) ones; an empty key refuses its environment.
	AppKey        string
	SandboxAppKey string
	// CoinPrice is the price of one coin in fen.
	CoinPrice int64
	// Products, when not nil, are the published goods and their unit
	// prices (fen): another product or price is refused. Nil accepts any.
	Products map[string]int64
}

// Virtual payment modes (wx.requestVirtualPayment's mode).
const (
	XPayModeGoods = "short_series_goods"
	XPayModeCoins = "short_series_coin"
)

// xpay order statuses (query_order's status).
const (
	xpayStatusCreated    = 1
	xpayStatusPaid       = 2 // paid, not delivered yet
	xpayStatusDelivered  = 4
	xpayStatusRefunded   = 5
	xpayStatusRefundFail = 7
)

// Server-API errcodes.
const (
	xpayErrParam       = 268490002
	xpayErrSign        = 268490003
	xpayErrRepeated    = 268490004
	xpayErrCancelled   = 268490005
	xpayErrBalance     = 268490006
	xpayErrSessionKey  = 268490009
	xpayErrBillPending = 268490011
	xpayErrLeftFee     = 268490016
	xpayErrUnauthAPI   = 48001
	wechatErrBadSig    = 87009
	wechatErrOpenID    = 40003
)

// Client error codes of wx.requestVirtualPayment.
const (
	xpayClientParam     = -15001
	xpayClientSignature = -15005 // signature (session_key) invalid
	xpayClientPaySig    = -15006
)

const (
	// xpayOfficialOpenID is the FromUserName of virtual payment pushes: a
	// fixed WeChat account, not the user (who is in OpenId).
	xpayOfficialOpenID = "oWeChatXPayNotify00000000000"
	// xpayMaxAttempts bounds the deliveries of one push.
	xpayMaxAttempts = 15
	// xpayRefundDelay is how long a refund takes to settle.
	xpayRefundDelay = 100 * time.Millisecond
	// xpayPushTimeout bounds the pushes sent in the background.
	xpayPushTimeout = 30 * time.Second
)

var (
	xpayOutTradeNoRE = regexp.MustCompile(`^[0-9A-Za-z_\-|*@]{8,32}$`)
	xpayRefundIDRE   = regexp.MustCompile(`^[0-9A-Za-z_-]{8,32}$`)
)

// xpayOrder is a cash order (order_type 0) or a refund (order_type 1).
type xpayOrder struct {
	app, openid, name     string
	env                   int
	orderID, wxOrderID    string
	mode, productID       string
	quantity, unitPrice   int64
	fee, paidFee, leftFee int64
	status, orderType     int
	refundFee             int64
	payOrderID            string // refunds: the cash order's order_id
	attach, bizMeta       string
	transactionID         string
	created, updated      time.Time
	paidAt, providedAt    time.Time
	// pushCreateTime is the CreateTime of the order's push, the same on
	// every retry.
	pushCreateTime int64
}

// xpayBalance is one user's coins in one app and environment.
type xpayBalance struct {
	balance, present             int64
	sumSave, sumPresent, sumCost int64
}

// xpayCoinOp is a currency_pay, cancel_currency_pay or present_currency.
type xpayCoinOp struct {
	kind, openid, payOrderID string
	amount, cancelled        int64
	usedPresent              int64
	body                     string // the first request's body, for repeats
}

type xpayState struct {
	mu       sync.Mutex
	orders   map[string]*xpayOrder // app|env|order_id
	wxOrders map[string]*xpayOrder // app|env|wx_order_id
	balances map[string]*xpayBalance
	coinOps  map[string]*xpayCoinOp // app|env|order_id
	seq      int64
}

func newXPayState() *xpayState {
	return &xpayState{
		orders: map[string]*xpayOrder{}, wxOrders: map[string]*xpayOrder{},
		balances: map[string]*xpayBalance{}, coinOps: map[string]*xpayCoinOp{},
	}
}

func xpayKey(app string, env int, id string) string {
	return app + "|" + strconv.Itoa(env) + "|" + id
}

// balance returns (creating) a user's coins. Callers hold st.mu.
func (st *xpayState) balance(app string, env int, openid string) *xpayBalance {
	k := xpayKey(app, env, openid)
	b := st.balances[k]
	if b == nil {
		b = &xpayBalance{}
		st.balances[k] = b
	}
	return b
}

// newWxOrderID makes a WeChat-side order id. Callers hold st.mu.
func (st *xpayState) newWxOrderID(now time.Time) string {
	st.seq++
	return "wxo" + now.In(wechatPayZone).Format("20060102150405") + fmt.Sprintf("%08d", st.seq)
}

// xpayAppKey returns the AppKey of env, "" when it has none.
func xpayAppKey(x *XPayAccount, env int) string {
	switch env {
	case 0:
		return x.AppKey
	case 1:
		return x.SandboxAppKey
	}
	return ""
}

// xpaySign is hex(HMAC-SHA256(key, msg)).
func xpaySign(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func xpaySignEqual(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}

// XPayBalance is a user's coin balance as query_user_balance reports it.
type XPayBalance struct {
	Balance    int64 `json:"balance"`
	Present    int64 `json:"present_balance"`
	SumSave    int64 `json:"sum_save"`
	SumPresent int64 `json:"sum_present"`
	SumCost    int64 `json:"sum_cost"`
}

// XPayCoins returns user name's coins in app (minigate id) and env.
func (s *Sandbox) XPayCoins(app string, env int, name string) XPayBalance {
	a := s.App(app)
	if a == nil {
		return XPayBalance{}
	}
	st := s.xpay
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.balance(app, env, s.User(a, name).OpenID)
	return XPayBalance{Balance: b.balance, Present: b.present, SumSave: b.sumSave, SumPresent: b.sumPresent, SumCost: b.sumCost}
}

// --- server APIs ---

// xpaySigned lists the APIs that need the user's signature besides pay_sig.
var xpaySigned = map[string]bool{"query_user_balance": true, "currency_pay": true, "cancel_currency_pay": true}

// xpayCall is one authenticated xpay API call.
type xpayCall struct {
	c    *fiber.Ctx
	a    *App
	api  string
	body map[string]any
	raw  string
	env  int
}

func (s *Sandbox) mountXPay(r fiber.Router) {
	r.Get("/wxa/checksession", s.wechatCheckSession)
	r.Get("/xpay/bill_file/:token", s.xpayServeBill)
	r.Post("/xpay/:api", s.xpayAPI)
}

// wechatCheckSession is GET /wxa/checksession: signature =
// hex(HMAC-SHA256(session_key, "")) must be made with the user's current key.
func (s *Sandbox) wechatCheckSession(c *fiber.Ctx) error {
	a, err := s.wechatTokenApp(c)
	if a == nil {
		return err
	}
	if hit, err := s.wechatInjected(c, a.ID, "checksession"); hit {
		return err
	}
	if c.Query("sig_method") != "hmac_sha256" {
		return wechatError(c, xpayErrParam, "invalid sig_method")
	}
	key, known, _ := s.currentSessionKey(a.ID, c.Query("openid"))
	if !known {
		return wechatError(c, wechatErrOpenID, "invalid openid")
	}
	if key == "" || !xpaySignEqual(c.Query("signature"), xpaySign(key, "")) {
		return wechatError(c, wechatErrBadSig, "invalid signature")
	}
	return c.JSON(fiber.Map{"errcode": 0, "errmsg": "ok"})
}

// currentSessionKey returns the current session key of the user with
// openid in app (minigate id), whether the simulator knows the user, and
// the user's stale keys.
func (s *Sandbox) currentSessionKey(app, openid string) (key string, known bool, stale []string) {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	name, ok := st.names[wechatKey(app, openid)]
	if !ok {
		return "", false, nil
	}
	k := wechatKey(app, name)
	return st.sessionKeys[k], true, append([]string(nil), st.staleKeys[k]...)
}

// checkUserSignature checks sig over msg against the current session key of
// the user with openid; it returns the errcode to answer (0 when valid):
// session-key expired when the user has no current key or sig was made
// with a stale one, signature error otherwise.
func (s *Sandbox) checkUserSignature(app, openid, msg, sig string) int {
	key, _, stale := s.currentSessionKey(app, openid)
	if key != "" && xpaySignEqual(sig, xpaySign(key, msg)) {
		return 0
	}
	if key == "" {
		return xpayErrSessionKey
	}
	for _, k := range stale {
		if xpaySignEqual(sig, xpaySign(k, msg)) {
			return xpayErrSessionKey
		}
	}
	return xpayErrSign
}

// xpayAPI authenticates an xpay API call (access token, pay_sig with the
// AppKey of the body's env, and for three APIs the user's signature), then
// dispatches it.
func (s *Sandbox) xpayAPI(c *fiber.Ctx) error {
	a, err := s.wechatTokenApp(c)
	if a == nil {
		return err
	}
	api := c.Params("api")
	handler, ok := xpayHandlers[api]
	if !ok {
		return wechatError(c, xpayErrUnauthAPI, "api unauthorized (not simulated): "+api)
	}
	if a.XPay == nil {
		return wechatError(c, xpayErrUnauthAPI, "virtual payment is not enabled for this app")
	}
	if hit, err := s.wechatInjected(c, a.ID, "xpay/"+api); hit {
		return err
	}
	call := &xpayCall{c: c, a: a, api: api, raw: string(c.Body())}
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.UseNumber()
	if err := dec.Decode(&call.body); err != nil || call.body == nil {
		return wechatError(c, xpayErrParam, "body is not a JSON object")
	}
	env, ok := xpayInt(call.body, "env")
	if !ok || (env != 0 && env != 1) {
		if _, present := call.body["env"]; present {
			return wechatError(c, xpayErrParam, "env must be 0 or 1")
		}
		env = 0 // download_bill has no env
	}
	call.env = int(env)
	key := xpayAppKey(a.XPay, call.env)
	if key == "" || !xpaySignEqual(c.Query("pay_sig"), xpaySign(key, "/xpay/"+api+"&"+call.raw)) {
		return wechatError(c, xpayErrSign, "签名校验失败 (pay_sig)")
	}
	if xpaySigned[api] {
		openid, _ := call.body["openid"].(string)
		if c.Query("signature") == "" {
			return wechatError(c, xpayErrSign, "签名校验失败 (signature missing)")
		}
		if code := s.checkUserSignature(a.ID, openid, call.raw, c.Query("signature")); code == xpayErrSessionKey {
			return wechatError(c, code, "用户 session_key 不存在或已过期，请重新登录")
		} else if code != 0 {
			return wechatError(c, code, "签名校验失败 (signature)")
		}
	}
	return handler(s, call)
}

var xpayHandlers = map[string]func(*Sandbox, *xpayCall) error{
	"query_user_balance":   (*Sandbox).xpayQueryBalance,
	"currency_pay":         (*Sandbox).xpayCurrencyPay,
	"cancel_currency_pay":  (*Sandbox).xpayCancelCurrencyPay,
	"present_currency":     (*Sandbox).xpayPresentCurrency,
	"query_order":          (*Sandbox).xpayQueryOrder,
	"refund_order":         (*Sandbox).xpayRefundOrder,
	"notify_provide_goods": (*Sandbox).xpayNotifyProvideGoods,
	"download_bill":        (*Sandbox).xpayDownloadBill,
}

// xpayInt reads a JSON integer field (a number, not a string).
func xpayInt(body map[string]any, key string) (int64, bool) {
	n, ok := body[key].(json.Number)
	if !ok {
		return 0, false
	}
	v, err := n.Int64()
	return v, err == nil
}

// xpayStr reads a string field.
func xpayStr(body map[string]any, key string) string {
	v, _ := body[key].(string)
	return v
}

func xpayOK(c *fiber.Ctx, fields fiber.Map) error {
	fields["errcode"], fields["errmsg"] = 0, "ok"
	return c.JSON(fields)
}

// userOf checks the call's openid is a user of the app the simulator knows.
func (s *Sandbox) xpayUser(call *xpayCall) (string, bool) {
	openid := xpayStr(call.body, "openid")
	s.wechat.mu.Lock()
	defer s.wechat.mu.Unlock()
	_, ok := s.wechat.names[wechatKey(call.a.ID, openid)]
	return openid, ok && openid != ""
}

func (s *Sandbox) xpayQueryBalance(call *xpayCall) error {
	openid, ok := s.xpayUser(call)
	if !ok {
		return wechatError(call.c, 268490001, "openid error")
	}
	st := s.xpay
	st.mu.Lock()
	b := *st.balance(call.a.ID, call.env, openid)
	st.mu.Unlock()
	return xpayOK(call.c, fiber.Map{
		"balance": b.balance, "present_balance": b.present, "sum_save": b.sumSave, "sum_present": b.sumPresent,
		"sum_balance": b.sumSave + b.sumPresent, "sum_cost": b.sumCost, "first_save_flag": b.sumSave == 0,
	})
}

// xpayRepeat answers a coin operation whose order_id was used before:
// 268490004 (the earlier operation succeeded) for the same request, a
// parameter error for another.
func xpayRepeat(call *xpayCall, op *xpayCoinOp) error {
	if op.body != call.raw {
		return wechatError(call.c, xpayErrParam, "order_id already used with other parameters")
	}
	return wechatError(call.c, xpayErrRepeated, "repeated operation, the previous one succeeded")
}

func (s *Sandbox) xpayCurrencyPay(call *xpayCall) error {
	openid, ok := s.xpayUser(call)
	if !ok {
		return wechatError(call.c, 268490001, "openid error")
	}
	amount, okA := xpayInt(call.body, "amount")
	orderID := xpayStr(call.body, "order_id")
	if !okA || amount <= 0 || orderID == "" {
		return wechatError(call.c, xpayErrParam, "amount must be a positive integer and order_id is required")
	}
	if items := xpayStr(call.body, "payitem"); items != "" {
		var list []map[string]any
		if json.Unmarshal([]byte(items), &list) != nil {
			return wechatError(call.c, xpayErrParam, "payitem must be a JSON array (as a string)")
		}
	}
	st := s.xpay
	st.mu.Lock()
	defer st.mu.Unlock()
	k := xpayKey(call.a.ID, call.env, orderID)
	if op := st.coinOps[k]; op != nil {
		return xpayRepeat(call, op)
	}
	b := st.balance(call.a.ID, call.env, openid)
	if b.balance < amount {
		return wechatError(call.c, xpayErrBalance, "代币余额不足")
	}
	used := min(b.present, amount)
	b.present -= used
	b.balance -= amount
	b.sumCost += amount
	st.coinOps[k] = &xpayCoinOp{kind: "pay", openid: openid, amount: amount, usedPresent: used, body: call.raw}
	return xpayOK(call.c, fiber.Map{"order_id": orderID, "balance": b.balance, "used_present_amount": used})
}

func (s *Sandbox) xpayCancelCurrencyPay(call *xpayCall) error {
	openid, ok := s.xpayUser(call)
	if !ok {
		return wechatError(call.c, 268490001, "openid error")
	}
	amount, okA := xpayInt(call.body, "amount")
	payID, orderID := xpayStr(call.body, "pay_order_id"), xpayStr(call.body, "order_id")
	if !okA || amount <= 0 || payID == "" || orderID == "" {
		return wechatError(call.c, xpayErrParam, "pay_order_id, order_id and a positive amount are required")
	}
	st := s.xpay
	st.mu.Lock()
	defer st.mu.Unlock()
	k := xpayKey(call.a.ID, call.env, orderID)
	if op := st.coinOps[k]; op != nil {
		return xpayRepeat(call, op)
	}
	pay := st.coinOps[xpayKey(call.a.ID, call.env, payID)]
	switch {
	case pay == nil || pay.kind != "pay" || pay.openid != openid:
		return wechatError(call.c, xpayErrParam, "pay_order_id is not a currency_pay of this user")
	case amount > pay.amount-pay.cancelled:
		return wechatError(call.c, xpayErrBalance, "amount exceeds what is left of the payment")
	}
	b := st.balance(call.a.ID, call.env, openid)
	// Presented coins the payment used go back first.
	back := min(amount, pay.usedPresent)
	pay.usedPresent -= back
	b.present += back
	b.balance += amount
	b.sumCost -= amount
	pay.cancelled += amount
	st.coinOps[k] = &xpayCoinOp{kind: "cancel", openid: openid, payOrderID: payID, amount: amount, body: call.raw}
	return xpayOK(call.c, fiber.Map{"order_id": orderID})
}

func (s *Sandbox) xpayPresentCurrency(call *xpayCall) error {
	openid, ok := s.xpayUser(call)
	if !ok {
		return wechatError(call.c, 268490001, "openid error")
	}
	amount, okA := xpayInt(call.body, "amount")
	orderID := xpayStr(call.body, "order_id")
	if !okA || amount <= 0 || orderID == "" {
		return wechatError(call.c, xpayErrParam, "amount must be a positive integer and order_id is required")
	}
	st := s.xpay
	st.mu.Lock()
	defer st.mu.Unlock()
	k := xpayKey(call.a.ID, call.env, orderID)
	if op := st.coinOps[k]; op != nil {
		return xpayRepeat(call, op)
	}
	b := st.balance(call.a.ID, call.env, openid)
	b.present += amount
	b.balance += amount
	b.sumPresent += amount
	st.coinOps[k] = &xpayCoinOp{kind: "present", openid: openid, amount: amount, body: call.raw}
	return xpayOK(call.c, fiber.Map{"order_id": orderID, "balance": b.balance, "present_balance": b.present})
}

// xpayFind returns the call's order (order_id or wx_order_id) if it is the
// openid's (any user's when openid is ""). Callers hold st.mu.
func (st *xpayState) find(call *xpayCall, openid string) *xpayOrder {
	var o *xpayOrder
	if id := xpayStr(call.body, "order_id"); id != "" {
		o = st.orders[xpayKey(call.a.ID, call.env, id)]
	} else if id := xpayStr(call.body, "wx_order_id"); id != "" {
		o = st.wxOrders[xpayKey(call.a.ID, call.env, id)]
	}
	if o == nil || (openid != "" && o.openid != openid) {
		return nil
	}
	return o
}

// view is the order as query_order shows it.
func (o *xpayOrder) view() fiber.Map {
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.Unix()
	}
	paid := o.paidAt
	envType := 1
	if o.env == 1 {
		envType = 2
	}
	return fiber.Map{
		"order_id": o.orderID, "create_time": unix(o.created), "update_time": unix(o.updated),
		"status": o.status, "biz_type": 0, "order_fee": o.fee, "coupon_fee": 0, "paid_fee": o.paidFee,
		"order_type": o.orderType, "refund_fee": o.refundFee, "paid_time": unix(paid),
		"provide_time": unix(o.providedAt), "biz_meta": o.bizMeta, "env_type": envType, "token": "",
		"left_fee": o.leftFee, "wx_order_id": o.wxOrderID, "channel_order_id": o.orderID,
		"wxpay_order_id": o.transactionID,
	}
}

func (s *Sandbox) xpayQueryOrder(call *xpayCall) error {
	openid := xpayStr(call.body, "openid")
	st := s.xpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.find(call, openid)
	if o == nil {
		// Which errcode the platform answers for an unknown order is not
		// documented; the simulator answers a parameter error.
		return wechatError(call.c, xpayErrParam, "order not exist")
	}
	return xpayOK(call.c, fiber.Map{"order": o.view()})
}

func (s *Sandbox) xpayNotifyProvideGoods(call *xpayCall) error {
	st := s.xpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.find(call, "")
	switch {
	case o == nil || o.orderType != 0:
		return wechatError(call.c, xpayErrParam, "order not exist")
	case o.status == xpayStatusDelivered:
		return xpayOK(call.c, fiber.Map{})
	case o.status != xpayStatusPaid:
		return wechatError(call.c, xpayErrParam, "order is not waiting for delivery")
	}
	o.status, o.providedAt, o.updated = xpayStatusDelivered, s.now(), s.now()
	return xpayOK(call.c, fiber.Map{})
}

func (s *Sandbox) xpayRefundOrder(call *xpayCall) error {
	openid := xpayStr(call.body, "openid")
	refundID := xpayStr(call.body, "refund_order_id")
	left, okL := xpayInt(call.body, "left_fee")
	fee, okF := xpayInt(call.body, "refund_fee")
	reason, from := xpayStr(call.body, "refund_reason"), xpayStr(call.body, "req_from")
	switch {
	case !xpayRefundIDRE.MatchString(refundID):
		return wechatError(call.c, xpayErrParam, "refund_order_id must be 8-32 of [A-Za-z0-9_-]")
	case !okL || !okF || fee <= 0:
		return wechatError(call.c, xpayErrParam, "left_fee and refund_fee must be integers, refund_fee positive")
	case len(reason) != 1 || reason[0] < '0' || reason[0] > '5':
		return wechatError(call.c, xpayErrParam, "refund_reason must be \"0\" to \"5\"")
	case len(from) != 1 || from[0] < '1' || from[0] > '3':
		return wechatError(call.c, xpayErrParam, "req_from must be \"1\" to \"3\"")
	case len(xpayStr(call.body, "biz_meta")) > 1024:
		return wechatError(call.c, xpayErrParam, "biz_meta longer than 1024")
	}
	st, now := s.xpay, s.now()
	st.mu.Lock()
	o := st.find(call, openid)
	if o == nil || o.orderType != 0 {
		st.mu.Unlock()
		return wechatError(call.c, xpayErrParam, "order not exist")
	}
	answer := func(r *xpayOrder) error {
		return xpayOK(call.c, fiber.Map{"refund_order_id": r.orderID, "refund_wx_order_id": r.wxOrderID,
			"pay_order_id": o.orderID, "pay_wx_order_id": o.wxOrderID})
	}
	if r := st.orders[xpayKey(call.a.ID, call.env, refundID)]; r != nil {
		defer st.mu.Unlock()
		if r.orderType != 1 || r.payOrderID != o.orderID || r.refundFee != fee {
			return wechatError(call.c, xpayErrParam, "refund_order_id already used with other parameters")
		}
		return answer(r)
	}
	switch {
	case o.status != xpayStatusPaid && o.status != xpayStatusDelivered && o.status != xpayStatusRefunded && o.status != xpayStatusRefundFail:
		st.mu.Unlock()
		return wechatError(call.c, xpayErrParam, "order is not paid")
	case left != o.leftFee:
		st.mu.Unlock()
		return wechatError(call.c, xpayErrLeftFee, "left_fee does not match the order")
	case fee > o.leftFee:
		st.mu.Unlock()
		return wechatError(call.c, xpayErrParam, "refund_fee exceeds left_fee")
	}
	r := &xpayOrder{
		app: o.app, env: o.env, openid: o.openid, name: o.name, orderID: refundID, wxOrderID: st.newWxOrderID(now),
		mode: o.mode, fee: fee, refundFee: fee, status: xpayStatusCreated, orderType: 1, payOrderID: o.orderID,
		bizMeta: xpayStr(call.body, "biz_meta"), created: now, updated: now, pushCreateTime: now.Unix(),
	}
	o.leftFee -= fee // reserved; given back if the refund fails
	st.orders[xpayKey(r.app, r.env, r.orderID)] = r
	st.wxOrders[xpayKey(r.app, r.env, r.wxOrderID)] = r
	err := answer(r)
	st.mu.Unlock()
	go s.xpaySettleRefund(call.a, r.env, r.orderID)
	return err
}

// xpaySettleRefund completes a refund after xpayRefundDelay and pushes
// xpay_refund_notify.
func (s *Sandbox) xpaySettleRefund(a *App, env int, refundID string) {
	time.Sleep(xpayRefundDelay)
	st, now := s.xpay, s.now()
	st.mu.Lock()
	r := st.orders[xpayKey(a.ID, env, refundID)]
	o := st.orders[xpayKey(a.ID, env, r.payOrderID)]
	if r.status == xpayStatusCreated {
		r.status, r.paidAt, r.updated = xpayStatusRefunded, now, now
		o.status, o.updated = xpayStatusRefunded, now
	}
	st.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), xpayPushTimeout)
	defer cancel()
	if _, err := s.XPayRefundNotify(ctx, a, env, refundID, Faults{}); err != nil {
		s.log.Warn("sandbox: xpay: refund push", "refund_order_id", refundID, "err", err)
	}
}

// --- pushes ---

// xpayAcked reports whether an answer to a virtual payment push counts as
// received: a 2xx whose body is JSON with ErrCode 0.
func xpayAcked(d Delivery) bool {
	if d.Error != "" || d.Status < 200 || d.Status > 299 {
		return false
	}
	var ans struct {
		ErrCode *int64 `json:"ErrCode"`
	}
	if err := json.Unmarshal([]byte(d.Body), &ans); err != nil || ans.ErrCode == nil {
		return false
	}
	return *ans.ErrCode == 0
}

// xpayPush sends a virtual payment push to app a: fields(n) are attempt n's
// fields after the common ones (ToUserName, FromUserName, CreateTime,
// MsgType, Event). Signing faults apply to the first attempt; with a
// redelivery schedule, unacknowledged pushes are rebuilt and sent again,
// at most xpayMaxAttempts times.
func (s *Sandbox) xpayPush(ctx context.Context, a *App, event, openid string, createTime int64, f Faults, fields func(n int) []wechatField) (*Report, error) {
	if a.Messages.Token == "" || a.CallbackURL == "" {
		return nil, fmt.Errorf("sandbox: app %s has no message token or callback URL", a.ID)
	}
	mode, format, err := wechatPushModeFormat(a, PushRequest{})
	if err != nil {
		return nil, err
	}
	build := func(n int) []wechatField {
		return append([]wechatField{
			{"ToUserName", a.OriginalID}, {"FromUserName", xpayOfficialOpenID}, {"CreateTime", createTime},
			{"MsgType", "event"}, {"Event", event},
		}, fields(n)...)
	}
	rep := s.sendWithFaults(ctx, f, func(ctx context.Context) Delivery {
		return s.deliverRebuilt(ctx, xpayMaxAttempts, xpayAcked, func(n int) (string, string, http.Header, []byte, error) {
			pf := f
			if n > 0 {
				pf = Faults{} // the platform's own retries are genuine
			}
			target, ctype, body, err := wechatPushRequest(a, build(n), openid, mode, format, pf, s.now())
			return target, ctype, nil, body, err
		})
	})
	rep.Sent = encodeWeChatPush(PushFormatJSON, build(0))
	return rep, nil
}

// xpayPaidFields are a cash order's delivery or coin-payment push fields.
func (o *xpayOrder) paidFields(actualPrice int64) []wechatField {
	info := []wechatField{{"Quantity", o.quantity}, {"OrigPrice", o.fee}, {"ActualPrice", actualPrice}, {"Attach", o.attach}}
	name := "CoinInfo"
	if o.mode == XPayModeGoods {
		info = append([]wechatField{{"ProductId", o.productID}}, info...)
		name = "GoodsInfo"
	}
	return []wechatField{
		{"OpenId", o.openid}, {"OutTradeNo", o.orderID}, {"Env", int64(o.env)},
		{"WeChatPayInfo", []wechatField{{"MchOrderNo", o.orderID}, {"TransactionId", o.transactionID}, {"PaidTime", o.paidAt.Unix()}}},
		{name, info},
	}
}

// XPayDeliver (re)sends the delivery push (goods) or coin-payment push
// (coins) of the paid order outTradeNo of app a in env, with f's faults;
// f.Amount replaces the paid amount (ActualPrice). Until minigate
// acknowledges it the order stays paid and undelivered; the first
// acknowledgement marks it delivered.
func (s *Sandbox) XPayDeliver(ctx context.Context, a *App, env int, outTradeNo string, f Faults) (*Report, error) {
	st := s.xpay
	st.mu.Lock()
	o := st.orders[xpayKey(a.ID, env, outTradeNo)]
	if o == nil || o.orderType != 0 || o.status < xpayStatusPaid {
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: xpay: no paid order %q for app %s (env %d)", outTradeNo, a.ID, env)
	}
	c := *o
	st.mu.Unlock()
	event := "xpay_coin_pay_notify"
	if c.mode == XPayModeGoods {
		event = "xpay_goods_deliver_notify"
	}
	actual := c.paidFee
	if f.Amount != nil {
		actual = *f.Amount
	}
	rep, err := s.xpayPush(ctx, a, event, c.openid, c.pushCreateTime, f, func(int) []wechatField { return c.paidFields(actual) })
	if err != nil {
		return nil, err
	}
	acked := false
	for _, d := range rep.Deliveries {
		acked = acked || d.Acked
	}
	if acked {
		st.mu.Lock()
		if o.status == xpayStatusPaid {
			o.status, o.providedAt, o.updated = xpayStatusDelivered, s.now(), s.now()
		}
		st.mu.Unlock()
	}
	rep.Details = map[string]any{"event": event, "out_trade_no": c.orderID, "wx_order_id": c.wxOrderID,
		"transaction_id": c.transactionID, "env": c.env, "paid_fee": c.paidFee, "quantity": c.quantity, "mode": c.mode}
	return rep, nil
}

// XPayRefundNotify (re)sends xpay_refund_notify for refund refundID of app
// a in env, with RetryTimes counting the retries.
func (s *Sandbox) XPayRefundNotify(ctx context.Context, a *App, env int, refundID string, f Faults) (*Report, error) {
	st := s.xpay
	st.mu.Lock()
	r := st.orders[xpayKey(a.ID, env, refundID)]
	if r == nil || r.orderType != 1 {
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: xpay: no refund %q for app %s (env %d)", refundID, a.ID, env)
	}
	o := st.orders[xpayKey(a.ID, env, r.payOrderID)]
	rc, oc := *r, *o
	st.mu.Unlock()
	retCode, retMsg := 0, "success"
	if rc.status == xpayStatusRefundFail {
		retCode, retMsg = 1, "refund failed"
	}
	fee := rc.refundFee
	if f.Amount != nil {
		fee = *f.Amount
	}
	rep, err := s.xpayPush(ctx, a, "xpay_refund_notify", rc.openid, rc.pushCreateTime, f, func(n int) []wechatField {
		return []wechatField{
			{"OpenId", rc.openid}, {"WxRefundId", rc.wxOrderID}, {"MchRefundId", rc.orderID},
			{"WxOrderId", oc.wxOrderID}, {"MchOrderId", oc.orderID}, {"RefundFee", fee},
			{"RetCode", int64(retCode)}, {"RetMsg", retMsg},
			{"RefundStartTimestamp", rc.created.Unix()}, {"RefundSuccTimestamp", rc.paidAt.Unix()},
			{"WxpayRefundTransactionId", "50" + rc.wxOrderID}, {"RetryTimes", int64(n)},
		}
	})
	if err != nil {
		return nil, err
	}
	rep.Details = map[string]any{"event": "xpay_refund_notify", "refund_order_id": rc.orderID,
		"out_trade_no": oc.orderID, "refund_fee": rc.refundFee, "ret_code": retCode}
	return rep, nil
}

// XPayComplaint has the payer of order outTradeNo (app a, env) complain;
// the platform pushes xpay_complaint_notify.
func (s *Sandbox) XPayComplaint(ctx context.Context, a *App, env int, outTradeNo, detail string, f Faults) (*Report, error) {
	st, now := s.xpay, s.now()
	st.mu.Lock()
	o := st.orders[xpayKey(a.ID, env, outTradeNo)]
	if o == nil || o.orderType != 0 {
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: xpay: no order %q for app %s (env %d)", outTradeNo, a.ID, env)
	}
	oc := *o
	st.seq++
	id := fmt.Sprintf("2000%016d", st.seq)
	st.mu.Unlock()
	if detail == "" {
		detail = "用户投诉: 道具未到账"
	}
	rep, err := s.xpayPush(ctx, a, "xpay_complaint_notify", oc.openid, now.Unix(), f, func(n int) []wechatField {
		return []wechatField{
			{"OpenId", oc.openid}, {"WxOrderId", oc.wxOrderID}, {"MchOrderId", oc.orderID},
			{"TransactionId", oc.transactionID}, {"ComplaintId", id}, {"ComplaintDetail", detail},
			{"ComplaintTime", now.Unix()}, {"RetryTimes", int64(n)}, {"RequestId", randomHex(8)},
		}
	})
	if err != nil {
		return nil, err
	}
	rep.Details = map[string]any{"event": "xpay_complaint_notify", "complaint_id": id, "out_trade_no": oc.orderID}
	return rep, nil
}

// --- wx.requestVirtualPayment ---

// XPayPayment is what the mini-program passes to wx.requestVirtualPayment,
// presented to the simulator by the simulated user.
type XPayPayment struct {
	Mode      string `json:"mode"`
	SignData  string `json:"signData"`
	PaySig    string `json:"paySig"`
	Signature string `json:"signature"`
	Faults    Faults `json:"faults"`
}

// XPayClientError is how wx.requestVirtualPayment fails: its fail
// callback's errCode and errMsg.
type XPayClientError struct {
	ErrCode int    `json:"errCode"`
	ErrMsg  string `json:"errMsg"`
}

func (e *XPayClientError) Error() string {
	return fmt.Sprintf("requestVirtualPayment:fail %d %s", e.ErrCode, e.ErrMsg)
}

func xpayClientFail(code int, format string, args ...any) *XPayClientError {
	return &XPayClientError{ErrCode: code, ErrMsg: "requestVirtualPayment:fail " + fmt.Sprintf(format, args...)}
}

// xpaySignData is signData as the platform reads it.
type xpaySignData struct {
	OfferID      string `json:"offerId"`
	BuyQuantity  int64  `json:"buyQuantity"`
	Env          int    `json:"env"`
	CurrencyType string `json:"currencyType"`
	ProductID    string `json:"productId"`
	GoodsPrice   *int64 `json:"goodsPrice"`
	OutTradeNo   string `json:"outTradeNo"`
	Attach       string `json:"attach"`
}

// RequestVirtualPayment is wx.requestVirtualPayment on user name's phone:
// it checks mode and signData, paySig (with the AppKey of signData.env) and
// signature (with the user's current session key) as WeChat does, charges
// the user (crediting coins in coin mode) and pushes the delivery or
// coin-payment notification to minigate with p.Faults. The outTradeNo can
// be used once.
func (s *Sandbox) RequestVirtualPayment(ctx context.Context, a *App, name string, p XPayPayment) (*Report, error) {
	x := a.XPay
	if x == nil {
		return nil, xpayClientFail(xpayClientParam, "virtual payment is not enabled for app %s", a.ID)
	}
	if p.Mode != XPayModeGoods && p.Mode != XPayModeCoins {
		return nil, xpayClientFail(xpayClientParam, "mode must be %s or %s", XPayModeGoods, XPayModeCoins)
	}
	sd, err := parseXPaySignData(p.SignData)
	if err != nil {
		return nil, xpayClientFail(xpayClientParam, "signData: %v", err)
	}
	switch {
	case sd.OfferID != x.OfferID:
		return nil, xpayClientFail(xpayClientParam, "offerId is not this mini-program's")
	case sd.CurrencyType != "CNY":
		return nil, xpayClientFail(xpayClientParam, "currencyType must be CNY")
	case sd.BuyQuantity <= 0:
		return nil, xpayClientFail(xpayClientParam, "buyQuantity must be positive")
	case !xpayOutTradeNoRE.MatchString(sd.OutTradeNo) || sd.OutTradeNo[0] == '_':
		return nil, xpayClientFail(xpayClientParam, "outTradeNo must be 8-32 of [0-9A-Za-z_-|*@], not starting with _")
	case p.Mode == XPayModeGoods && (sd.ProductID == "" || sd.GoodsPrice == nil || *sd.GoodsPrice <= 0):
		return nil, xpayClientFail(xpayClientParam, "productId and a positive goodsPrice are required in goods mode")
	case p.Mode == XPayModeCoins && x.CoinPrice <= 0:
		return nil, xpayClientFail(xpayClientParam, "coins are not configured")
	}
	if p.Mode == XPayModeGoods && x.Products != nil {
		if price, ok := x.Products[sd.ProductID]; !ok || price != *sd.GoodsPrice {
			return nil, xpayClientFail(xpayClientParam, "goodsPrice does not match the product's price")
		}
	}
	key := xpayAppKey(x, sd.Env)
	if key == "" || !xpaySignEqual(p.PaySig, xpaySign(key, "requestVirtualPayment&"+p.SignData)) {
		return nil, xpayClientFail(xpayClientPaySig, "paySig error")
	}
	u := s.User(a, name)
	if s.checkUserSignature(a.ID, u.OpenID, p.SignData, p.Signature) != 0 {
		return nil, xpayClientFail(xpayClientSignature, "SIGNATURE_INVALID")
	}

	st, now := s.xpay, s.now()
	st.mu.Lock()
	k := xpayKey(a.ID, sd.Env, sd.OutTradeNo)
	if st.orders[k] != nil {
		st.mu.Unlock()
		return nil, xpayClientFail(xpayClientParam, "outTradeNo has been used")
	}
	o := &xpayOrder{
		app: a.ID, env: sd.Env, openid: u.OpenID, name: name, orderID: sd.OutTradeNo, wxOrderID: st.newWxOrderID(now),
		mode: p.Mode, productID: sd.ProductID, quantity: sd.BuyQuantity, attach: sd.Attach,
		status: xpayStatusPaid, created: now, updated: now, paidAt: now, pushCreateTime: now.Unix(),
		transactionID: "42000" + now.In(wechatPayZone).Format("20060102") + wechatPayDigits(15),
	}
	if p.Mode == XPayModeGoods {
		o.unitPrice = *sd.GoodsPrice
	} else {
		o.unitPrice = x.CoinPrice
		b := st.balance(a.ID, sd.Env, u.OpenID)
		b.balance += sd.BuyQuantity
		b.sumSave += sd.BuyQuantity
	}
	o.fee = o.unitPrice * sd.BuyQuantity
	o.paidFee, o.leftFee = o.fee, o.fee
	st.orders[k] = o
	st.wxOrders[xpayKey(a.ID, sd.Env, o.wxOrderID)] = o
	st.mu.Unlock()
	s.wechat.rememberName(a.ID, u.OpenID, name)
	return s.XPayDeliver(ctx, a, sd.Env, sd.OutTradeNo, p.Faults)
}

// parseXPaySignData reads signData strictly: a JSON object whose numbers
// are JSON numbers (a string buyQuantity, env or goodsPrice is refused, as
// WeChat refuses it).
func parseXPaySignData(s string) (*xpaySignData, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, errors.New("not a JSON object")
	}
	for _, k := range []string{"buyQuantity", "env", "goodsPrice"} {
		if v, ok := raw[k]; ok && (len(v) == 0 || v[0] == '"') {
			return nil, fmt.Errorf("%s must be a number", k)
		}
	}
	var sd xpaySignData
	if err := json.Unmarshal([]byte(s), &sd); err != nil {
		return nil, err
	}
	if sd.Env != 0 && sd.Env != 1 {
		return nil, errors.New("env must be 0 or 1")
	}
	return &sd, nil
}
