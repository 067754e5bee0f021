package sandbox

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// QQ wallet (QQ钱包) simulation under /sandbox/qpay, with the real paths of
// https://qpay.qq.com below it: unified order, order query, close, refund
// and refund query (the real refund host, api.qpay.qq.com, is the same base
// here, and the simulator needs no client certificate). Requests and
// answers are flat XML documents signed with the WeChat Pay v2 MD5 rule,
// implemented here independently of minigate's adapter. Per merchant the
// simulator keeps a ledger of orders, payments and refunds, in order, for
// daily statements.

const (
	// qpayRefundDelay is how long a refund stays PROCESSING.
	qpayRefundDelay = 100 * time.Millisecond
	// qpayMaxRequest bounds a request body.
	qpayMaxRequest = 64 << 10
	// qpayForeignMchID and qpayForeignAppID are what the foreign_merchant /
	// foreign_appid faults put in a notification.
	qpayForeignMchID = "1900000109"
	qpayForeignAppID = "1104606907"
	// qpayPayerName is the simulated user who pays QQ wallet orders: the
	// unified order names no payer, so the notification's openid is this
	// user's.
	qpayPayerName = "qq-payer"
	// qpayTimeLayout is QQ wallet's yyyyMMddHHmmss, Beijing time.
	qpayTimeLayout = "20060102150405"
)

// QQ wallet trade and refund states.
const (
	qpayTradeNotPay  = "NOTPAY"
	qpayTradeSuccess = "SUCCESS"
	qpayTradeRefund  = "REFUND"
	qpayTradeClosed  = "CLOSED"

	qpayRefundProcessing = "PROCESSING"
	qpayRefundSuccess    = "SUCCESS"
)

var (
	qpayZone         = time.FixedZone("CST", 8*3600)
	qpayOutTradeNoRE = regexp.MustCompile(`^[0-9A-Za-z_\-|*]{1,32}$`)
	qpayStateDesc    = map[string]string{
		qpayTradeNotPay: "未支付", qpayTradeSuccess: "支付成功", qpayTradeRefund: "转入退款", qpayTradeClosed: "已关闭",
	}
)

// QPayError is a failure the simulator answers (result_code FAIL, signed)
// instead of handling a QQ wallet call, e.g. SYSTEMERROR.
type QPayError struct {
	// API selects the call: unified_order, order_query, close_order, refund
	// or refund_query; empty matches any.
	API        string
	ErrCode    string
	ErrCodeDes string
	// Times is how many calls fail (default 1).
	Times int
}

type qpayState struct {
	mu       sync.Mutex
	ledgers  map[string]*qpayLedger      // by mch_id
	failures injectedFailures[QPayError] // by mch_id
}

func newQPayState() *qpayState { return &qpayState{ledgers: map[string]*qpayLedger{}} }

// qpayLedger is one merchant's books; the lists keep creation order for
// statements, the maps index them.
type qpayLedger struct {
	orders     map[string]*qpayOrder // by out_trade_no
	orderList  []*qpayOrder
	refunds    map[string]*qpayRefund // by out_refund_no
	refundList []*qpayRefund
}

// ledger returns the merchant's ledger, creating it. Callers hold st.mu.
func (st *qpayState) ledger(mchID string) *qpayLedger {
	l := st.ledgers[mchID]
	if l == nil {
		l = &qpayLedger{orders: map[string]*qpayOrder{}, refunds: map[string]*qpayRefund{}}
		st.ledgers[mchID] = l
	}
	return l
}

// qpayOrderParams are what a unified order with the same out_trade_no must
// repeat to get the same prepay_id back.
type qpayOrderParams struct {
	AppID     string
	Body      string
	Attach    string
	Total     int64
	TradeType string
	NotifyURL string
}

type qpayOrder struct {
	qpayOrderParams
	MchID      string
	OutTradeNo string
	PrepayID   string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: no time_expire

	State         string // NOTPAY, SUCCESS, REFUND, CLOSED
	TransactionID string
	OpenID        string
	PaidAt        time.Time
	ClosedAt      time.Time
	// Refunded is the sum of the order's refunds, processing or done.
	Refunded int64
}

type qpayRefund struct {
	OutTradeNo    string
	TransactionID string
	OutRefundNo   string
	RefundID      string
	Amount        int64
	Status        string // PROCESSING, SUCCESS
	CreatedAt     time.Time
	SucceededAt   time.Time
}

// settle moves a PROCESSING refund to SUCCESS once its delay has passed.
func (r *qpayRefund) settle(now time.Time) {
	if r.Status == qpayRefundProcessing && !now.Before(r.CreatedAt.Add(qpayRefundDelay)) {
		r.Status, r.SucceededAt = qpayRefundSuccess, now
	}
}

// qpayCall is an authenticated QQ wallet request.
type qpayCall struct {
	app    *App
	m      *QPayMerchant
	fields map[string]string
}

// qpayReply is a handler's answer: business fields on success, or an
// err_code (result_code FAIL).
type qpayReply struct {
	fields     map[string]string
	errCode    string
	errCodeDes string
}

func qpayFail(code, des string) qpayReply { return qpayReply{errCode: code, errCodeDes: des} }

func (s *Sandbox) mountQPay(r fiber.Router) {
	r.Post("/cgi-bin/pay/qpay_unified_order.cgi", s.qpayAPI("unified_order", s.qpayUnifiedOrder))
	r.Post("/cgi-bin/pay/qpay_order_query.cgi", s.qpayAPI("order_query", s.qpayOrderQuery))
	r.Post("/cgi-bin/pay/qpay_close_order.cgi", s.qpayAPI("close_order", s.qpayCloseOrder))
	r.Post("/cgi-bin/pay/qpay_refund.cgi", s.qpayAPI("refund", s.qpayRefund))
	r.Post("/cgi-bin/pay/qpay_refund_query.cgi", s.qpayAPI("refund_query", s.qpayRefundQuery))
	s.mountQPayBill(r)
}

// FailQPay makes the next e.Times calls (default 1) to merchant mchID's
// e.API answer e instead of being handled. The answer is signed.
func (s *Sandbox) FailQPay(mchID string, e QPayError) {
	s.qpay.failures.add(mchID, e.API, e.Times, e)
}

// qpayAPI parses and authenticates a request, applies injected failures,
// runs h and signs its answer. Requests that cannot be attributed to a
// merchant get an unsigned return_code FAIL, as there is no key to sign
// with; a bad sign gets a signed SIGNERROR.
func (s *Sandbox) qpayAPI(api string, h func(*qpayCall) qpayReply) fiber.Handler {
	return func(c *fiber.Ctx) error {
		body := c.Body()
		if len(body) > qpayMaxRequest {
			return qpayCommFail(c, "request too large")
		}
		fields, err := qpayParseXML(body)
		if err != nil {
			return qpayCommFail(c, "XML_FORMAT_ERROR: "+err.Error())
		}
		apps := s.appsWhere(func(a *App) bool {
			return a.Platform == QQ && a.QPay != nil && a.QPay.MchID == fields["mch_id"]
		})
		if fields["mch_id"] == "" || len(apps) == 0 {
			return qpayCommFail(c, "mch_id not exist")
		}
		call := &qpayCall{app: apps[0], m: apps[0].QPay, fields: fields}
		var rep qpayReply
		switch {
		case !qpaySignValid(fields, call.m.APIKey):
			rep = qpayFail("SIGNERROR", "签名错误")
		case fields["sign_type"] != "" && fields["sign_type"] != "MD5":
			rep = qpayFail("PARAM_ERROR", "sign_type not supported")
		case fields["nonce_str"] == "" || len(fields["nonce_str"]) > 32:
			rep = qpayFail("PARAM_ERROR", "nonce_str must be 1 to 32 characters")
		default:
			if appID := fields["appid"]; appID != "" {
				call.app = nil
				for _, a := range apps {
					if a.AppID == appID {
						call.app = a
					}
				}
			}
			if call.app == nil {
				rep = qpayFail("APPID_MCHID_NOT_MATCH", "appid and mch_id do not match")
			} else if f, ok := s.qpay.failures.take(call.m.MchID, api); ok {
				rep = qpayFail(f.ErrCode, f.ErrCodeDes)
			} else {
				rep = h(call)
			}
		}
		out := map[string]string{
			"return_code": "SUCCESS", "return_msg": "OK",
			"mch_id": call.m.MchID, "nonce_str": randomHex(16), "result_code": "SUCCESS",
		}
		if call.app != nil {
			out["appid"] = call.app.AppID
		}
		if rep.errCode != "" {
			out["result_code"], out["err_code"], out["err_code_des"] = "FAIL", rep.errCode, rep.errCodeDes
		}
		for k, v := range rep.fields {
			out[k] = v
		}
		out["sign"] = qpaySign(out, call.m.APIKey)
		c.Set(fiber.HeaderContentType, "text/xml; charset=utf-8")
		return c.Send(qpayXML(out))
	}
}

// qpayCommFail answers a request the platform could not even attribute.
func qpayCommFail(c *fiber.Ctx, msg string) error {
	c.Set(fiber.HeaderContentType, "text/xml; charset=utf-8")
	return c.Send(qpayXML(map[string]string{"return_code": "FAIL", "return_msg": msg}))
}

// --- unified order ---

func (s *Sandbox) qpayUnifiedOrder(call *qpayCall) qpayReply {
	f := call.fields
	for _, k := range []string{"body", "out_trade_no", "total_fee", "spbill_create_ip", "trade_type", "notify_url"} {
		if f[k] == "" {
			return qpayFail("LACK_PARAMS", "缺少参数 "+k)
		}
	}
	total, err := strconv.ParseInt(f["total_fee"], 10, 64)
	now := s.now()
	switch {
	case len(f["body"]) > 128:
		return qpayFail("PARAM_ERROR", "body longer than 128 bytes")
	case len(f["attach"]) > 128:
		return qpayFail("PARAM_ERROR", "attach longer than 128 bytes")
	case !qpayOutTradeNoRE.MatchString(f["out_trade_no"]):
		return qpayFail("PARAM_ERROR", "out_trade_no must be 1 to 32 of [0-9A-Za-z_-|*]")
	case f["fee_type"] != "" && f["fee_type"] != "CNY":
		return qpayFail("PARAM_ERROR", "fee_type must be CNY")
	case err != nil || total <= 0:
		return qpayFail("PARAM_ERROR", "total_fee must be a positive integer (fen)")
	case f["trade_type"] != "MINIAPP" && f["trade_type"] != "JSAPI":
		return qpayFail("PARAM_ERROR", "trade_type "+f["trade_type"]+" cannot pay in a mini-program")
	case !qpayIPv4(f["spbill_create_ip"]):
		return qpayFail("PARAM_ERROR", "spbill_create_ip must be an IPv4 address")
	case !qpayAbsoluteURL(f["notify_url"]):
		return qpayFail("PARAM_ERROR", "notify_url must be an absolute http(s) URL")
	}
	var expires time.Time
	for _, k := range []string{"time_start", "time_expire"} {
		if v := f[k]; v != "" {
			t, err := time.ParseInLocation(qpayTimeLayout, v, qpayZone)
			if err != nil {
				return qpayFail("PARAM_ERROR", k+" must be yyyyMMddHHmmss")
			}
			if k == "time_expire" {
				if !t.After(now) {
					return qpayFail("PARAM_ERROR", "time_expire is in the past")
				}
				expires = t
			}
		}
	}
	params := qpayOrderParams{
		AppID: call.app.AppID, Body: f["body"], Attach: f["attach"], Total: total,
		TradeType: f["trade_type"], NotifyURL: f["notify_url"],
	}
	st := s.qpay
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.ledger(call.m.MchID)
	if o := l.orders[f["out_trade_no"]]; o != nil {
		switch {
		case o.State == qpayTradeSuccess || o.State == qpayTradeRefund:
			return qpayFail("ORDERPAID", "该订单已支付")
		case o.State == qpayTradeClosed:
			return qpayFail("ORDERCLOSED", "该订单已关闭")
		case o.qpayOrderParams != params:
			return qpayFail("OUT_TRADE_NO_USED", "商户订单号重复")
		}
		return qpayReply{fields: map[string]string{"trade_type": o.TradeType, "prepay_id": o.PrepayID}}
	}
	o := &qpayOrder{
		qpayOrderParams: params, MchID: call.m.MchID, OutTradeNo: f["out_trade_no"],
		PrepayID: "6V" + randomHex(15), CreatedAt: now, ExpiresAt: expires, State: qpayTradeNotPay,
	}
	l.orders[o.OutTradeNo] = o
	l.orderList = append(l.orderList, o)
	return qpayReply{fields: map[string]string{"trade_type": o.TradeType, "prepay_id": o.PrepayID}}
}

func qpayIPv4(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && ip.To4() != nil && len(s) <= 16
}

func qpayAbsoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// --- query and close ---

// qpayFindOrder finds the call's order by transaction_id or out_trade_no.
// Callers hold st.mu.
func (st *qpayState) qpayFindOrder(call *qpayCall) *qpayOrder {
	l := st.ledger(call.m.MchID)
	var o *qpayOrder
	if txn := call.fields["transaction_id"]; txn != "" {
		for _, c := range l.orderList {
			if c.TransactionID == txn {
				o = c
			}
		}
	} else {
		o = l.orders[call.fields["out_trade_no"]]
	}
	if o == nil || o.AppID != call.app.AppID {
		return nil
	}
	return o
}

func (s *Sandbox) qpayOrderQuery(call *qpayCall) qpayReply {
	if call.fields["transaction_id"] == "" && call.fields["out_trade_no"] == "" {
		return qpayFail("LACK_PARAMS", "transaction_id 或 out_trade_no 必填")
	}
	st := s.qpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.qpayFindOrder(call)
	if o == nil {
		return qpayFail("ORDERNOTEXIST", "订单不存在")
	}
	return qpayReply{fields: o.queryFields()}
}

// queryFields is the order as the query API reports it.
func (o *qpayOrder) queryFields() map[string]string {
	f := map[string]string{
		"trade_state": o.State, "trade_state_desc": qpayStateDesc[o.State], "trade_type": o.TradeType,
		"out_trade_no": o.OutTradeNo, "total_fee": strconv.FormatInt(o.Total, 10), "fee_type": "CNY",
		"attach": o.Attach,
	}
	if o.TransactionID != "" {
		f["transaction_id"] = o.TransactionID
		f["time_end"] = o.PaidAt.In(qpayZone).Format(qpayTimeLayout)
		f["cash_fee"] = strconv.FormatInt(o.Total, 10)
		f["bank_type"] = "BALANCE"
		f["openid"] = o.OpenID
	}
	return f
}

// qpayCloseOrder closes an unpaid order. QQ's close takes the order total
// (as go-pay's and Essensoft's QQ clients send it); it must match.
func (s *Sandbox) qpayCloseOrder(call *qpayCall) qpayReply {
	f := call.fields
	if f["out_trade_no"] == "" || f["total_fee"] == "" {
		return qpayFail("LACK_PARAMS", "out_trade_no 和 total_fee 必填")
	}
	st := s.qpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.qpayFindOrder(call)
	switch {
	case o == nil:
		return qpayFail("ORDERNOTEXIST", "订单不存在")
	case f["total_fee"] != strconv.FormatInt(o.Total, 10):
		return qpayFail("PARAM_ERROR", "total_fee does not match the order")
	case o.State == qpayTradeSuccess || o.State == qpayTradeRefund:
		return qpayFail("ORDERPAID", "订单已支付，不能关闭")
	case o.State == qpayTradeClosed:
		return qpayFail("ORDERCLOSED", "订单已关闭，无法重复关闭")
	}
	o.State, o.ClosedAt = qpayTradeClosed, s.now()
	return qpayReply{}
}

// --- refunds ---

// qpayRefund refunds part or all of a paid order. The same out_refund_no
// refunds once: repeating it with the same order and amount answers the
// same refund; the total refunded never exceeds the order total.
func (s *Sandbox) qpayRefund(call *qpayCall) qpayReply {
	f := call.fields
	switch {
	case f["out_refund_no"] == "" || f["refund_fee"] == "":
		return qpayFail("LACK_PARAMS", "out_refund_no 和 refund_fee 必填")
	case f["transaction_id"] == "" && f["out_trade_no"] == "":
		return qpayFail("LACK_PARAMS", "transaction_id 或 out_trade_no 必填")
	case (f["op_user_id"] == "") != (f["op_user_passwd"] == ""):
		return qpayFail("LACK_PARAMS", "op_user_id 和 op_user_passwd 需同时提供")
	case f["op_user_passwd"] != "" && !qpayMD5Hex(f["op_user_passwd"]):
		return qpayFail("PARAM_ERROR", "op_user_passwd must be the MD5 of the operator password")
	case !qpayOutTradeNoRE.MatchString(f["out_refund_no"]):
		return qpayFail("PARAM_ERROR", "out_refund_no must be 1 to 32 of [0-9A-Za-z_-|*]")
	}
	amount, err := strconv.ParseInt(f["refund_fee"], 10, 64)
	if err != nil || amount <= 0 {
		return qpayFail("PARAM_ERROR", "refund_fee must be a positive integer (fen)")
	}
	now := s.now()
	st := s.qpay
	st.mu.Lock()
	defer st.mu.Unlock()
	o := st.qpayFindOrder(call)
	if o == nil {
		return qpayFail("ORDERNOTEXIST", "订单不存在")
	}
	l := st.ledger(call.m.MchID)
	if r := l.refunds[f["out_refund_no"]]; r != nil {
		if r.OutTradeNo != o.OutTradeNo || r.Amount != amount {
			return qpayFail("INVALID_REQUEST", "out_refund_no already used for another refund")
		}
		return qpayReply{fields: r.fields(o)}
	}
	switch {
	case o.State != qpayTradeSuccess && o.State != qpayTradeRefund:
		return qpayFail("INVALID_REQUEST", "订单未支付，不能退款")
	case o.Refunded+amount > o.Total:
		return qpayFail("INVALID_REQUEST", fmt.Sprintf("退款金额超过可退金额 (%d fen left)", o.Total-o.Refunded))
	}
	r := &qpayRefund{
		OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID, OutRefundNo: f["out_refund_no"],
		RefundID: "1121" + now.In(qpayZone).Format("20060102") + qpayDigits(16), Amount: amount,
		Status: qpayRefundProcessing, CreatedAt: now,
	}
	o.Refunded += amount
	o.State = qpayTradeRefund
	l.refunds[r.OutRefundNo] = r
	l.refundList = append(l.refundList, r)
	return qpayReply{fields: r.fields(o)}
}

// fields is the refund as the refund API answers it.
func (r *qpayRefund) fields(o *qpayOrder) map[string]string {
	return map[string]string{
		"transaction_id": r.TransactionID, "out_trade_no": r.OutTradeNo,
		"total_fee": strconv.FormatInt(o.Total, 10), "out_refund_no": r.OutRefundNo,
		"refund_id": r.RefundID, "refund_channel": "ORIGINAL", "refund_fee": strconv.FormatInt(r.Amount, 10),
	}
}

// qpayRefundQuery reports refunds chosen, in QQ's order of precedence, by
// refund_id, out_refund_no, transaction_id or out_trade_no, as numbered
// fields (out_refund_no_0, refund_status_0, …).
func (s *Sandbox) qpayRefundQuery(call *qpayCall) qpayReply {
	f := call.fields
	now := s.now()
	st := s.qpay
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.ledger(call.m.MchID)
	var refunds []*qpayRefund
	switch {
	case f["refund_id"] != "":
		for _, r := range l.refundList {
			if r.RefundID == f["refund_id"] {
				refunds = append(refunds, r)
			}
		}
	case f["out_refund_no"] != "":
		if r := l.refunds[f["out_refund_no"]]; r != nil {
			refunds = append(refunds, r)
		}
	case f["transaction_id"] != "" || f["out_trade_no"] != "":
		if o := st.qpayFindOrder(call); o != nil {
			for _, r := range l.refundList {
				if r.OutTradeNo == o.OutTradeNo {
					refunds = append(refunds, r)
				}
			}
		}
	default:
		return qpayFail("LACK_PARAMS", "refund_id、out_refund_no、transaction_id、out_trade_no 四选一")
	}
	var o *qpayOrder
	if len(refunds) > 0 {
		o = l.orders[refunds[0].OutTradeNo]
	}
	if o == nil || o.AppID != call.app.AppID {
		return qpayFail("REFUNDNOTEXIST", "退款单不存在")
	}
	out := map[string]string{
		"transaction_id": o.TransactionID, "out_trade_no": o.OutTradeNo, "fee_type": "CNY",
		"total_fee": strconv.FormatInt(o.Total, 10), "cash_fee": strconv.FormatInt(o.Total, 10),
		"refund_count": strconv.Itoa(len(refunds)),
	}
	for n, r := range refunds {
		r.settle(now)
		suffix := "_" + strconv.Itoa(n)
		out["out_refund_no"+suffix] = r.OutRefundNo
		out["refund_id"+suffix] = r.RefundID
		out["refund_channel"+suffix] = "ORIGINAL"
		out["refund_fee"+suffix] = strconv.FormatInt(r.Amount, 10)
		out["refund_status"+suffix] = r.Status
	}
	return qpayReply{fields: out}
}

// --- payment and notification ---

// payQPay has the simulated payer pay order outTradeNo of app a, then posts
// the signed payment notification to the order's notify_url with the
// requested faults. Paying a paid order again re-sends its notification, as
// the platform's retries do.
func (s *Sandbox) payQPay(ctx context.Context, a *App, outTradeNo string, f Faults) (*Report, error) {
	m := a.QPay
	if a.Platform != QQ || m == nil {
		return nil, fmt.Errorf("sandbox: app %s has no QQ wallet merchant", a.ID)
	}
	now := s.now()
	payer := s.User(a, qpayPayerName).OpenID
	st := s.qpay
	st.mu.Lock()
	o := st.ledger(m.MchID).orders[outTradeNo]
	switch {
	case o == nil || o.AppID != a.AppID:
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: qpay: no order %q for app %s", outTradeNo, a.ID)
	case o.State == qpayTradeClosed:
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: qpay: order %q is closed", outTradeNo)
	case o.State == qpayTradeNotPay && !o.ExpiresAt.IsZero() && now.After(o.ExpiresAt):
		st.mu.Unlock()
		return nil, fmt.Errorf("sandbox: qpay: order %q expired at %s", outTradeNo, o.ExpiresAt.In(qpayZone).Format(qpayTimeLayout))
	case o.State == qpayTradeNotPay:
		o.State, o.PaidAt, o.OpenID = qpayTradeSuccess, now, payer
		o.TransactionID = "1" + m.MchID + now.In(qpayZone).Format("20060102") + qpayDigits(9)
	}
	// The notification describes the payment, whatever happened since.
	n := o.queryFields()
	n["trade_state"] = qpayTradeSuccess
	delete(n, "trade_state_desc")
	notifyURL := o.NotifyURL
	st.mu.Unlock()

	n["appid"], n["mch_id"], n["nonce_str"] = a.AppID, m.MchID, randomHex(16)
	if f.Amount != nil {
		n["total_fee"] = strconv.FormatInt(*f.Amount, 10)
		n["cash_fee"] = n["total_fee"]
	}
	if f.ForeignMerchant {
		n["mch_id"] = qpayForeignMchID
	}
	if f.ForeignAppID {
		n["appid"] = qpayForeignAppID
	}
	n["sign"] = qpaySign(n, m.APIKey)
	if f.BadSignature {
		n["sign"] = qpayCorruptSign(n["sign"])
	}
	body := qpayXML(n)
	if f.Truncate {
		body = body[:len(body)/2]
	}
	rep := s.sendWithFaults(ctx, f, func(ctx context.Context) Delivery {
		return s.deliver(ctx, notifyURL, "text/xml; charset=utf-8", nil, body)
	})
	sent, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("sandbox: qpay: encode notification: %w", err)
	}
	rep.Sent = sent
	rep.Details = map[string]any{
		"out_trade_no": outTradeNo, "transaction_id": n["transaction_id"],
		"notification_id": n["transaction_id"] + ":" + qpayTradeSuccess, "total_fee": n["total_fee"],
	}
	return rep, nil
}

// qpayCorruptSign changes the first character of a signature.
func qpayCorruptSign(sig string) string {
	if sig == "" {
		return "0"
	}
	c := byte('0')
	if sig[0] == '0' {
		c = '1'
	}
	return string(c) + sig[1:]
}

// --- wire format ---

// qpaySign is the WeChat Pay v2 / QQ wallet signature: non-empty fields
// other than sign, by key in ASCII order, as k=v joined with &, then
// &key=<API key>, MD5, uppercase hex.
func qpaySign(fields map[string]string, apiKey string) string {
	var keys []string
	for k, v := range fields {
		if k != "sign" && v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	pairs := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		pairs = append(pairs, k+"="+fields[k])
	}
	pairs = append(pairs, "key="+apiKey)
	sum := md5.Sum([]byte(strings.Join(pairs, "&")))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func qpaySignValid(fields map[string]string, apiKey string) bool {
	want := qpaySign(fields, apiKey)
	return subtle.ConstantTimeCompare([]byte(strings.ToUpper(fields["sign"])), []byte(want)) == 1
}

// qpayMD5Hex reports whether s looks like an MD5 digest in hex.
func qpayMD5Hex(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == md5.Size
}

// qpayDigits returns n random decimal digits.
func qpayDigits(n int) string {
	h := randomHex(n)
	out := make([]byte, n)
	for i := range out {
		out[i] = '0' + h[i]%10
	}
	return string(out)
}

// qpayXML renders a flat document with CDATA values, keys sorted, as QQ
// wallet writes them; empty fields are left out.
func qpayXML(fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		if v != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("<xml>")
	for _, k := range keys {
		v := fields[k]
		if strings.Contains(v, "]]>") {
			fmt.Fprintf(&b, "<%s>", k)
			// Writes to a bytes.Buffer cannot fail.
			_ = xml.EscapeText(&b, []byte(v))
			fmt.Fprintf(&b, "</%s>", k)
			continue
		}
		fmt.Fprintf(&b, "<%s><![CDATA[%s]]></%s>", k, v, k)
	}
	b.WriteString("</xml>")
	return b.Bytes()
}

// qpayParseXML reads a flat <xml> document into its fields, refusing
// DOCTYPE/ENTITY declarations, nesting and repeated fields.
func qpayParseXML(body []byte) (map[string]string, error) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	var root *xml.StartElement
	for root == nil {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("no root element: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errors.New("declarations are not accepted")
		case xml.StartElement:
			root = &t
		}
	}
	if root.Name.Local != "xml" {
		return nil, fmt.Errorf("root <%s>, want <xml>", root.Name.Local)
	}
	fields := map[string]string{}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("unterminated document: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errors.New("declarations are not accepted")
		case xml.EndElement:
			// The root closes; only whitespace and comments may follow.
			for {
				tok, err := dec.Token()
				if errors.Is(err, io.EOF) {
					return fields, nil
				}
				if err != nil {
					return nil, err
				}
				if cd, ok := tok.(xml.CharData); ok && len(bytes.TrimSpace(cd)) == 0 {
					continue
				}
				if _, ok := tok.(xml.Comment); ok {
					continue
				}
				return nil, errors.New("content after the root element")
			}
		case xml.StartElement:
			var v struct {
				Text  string `xml:",chardata"`
				Inner []struct {
					XMLName xml.Name
				} `xml:",any"`
			}
			if err := dec.DecodeElement(&v, &t); err != nil {
				return nil, err
			}
			if len(v.Inner) > 0 {
				return nil, fmt.Errorf("nested elements in <%s>", t.Name.Local)
			}
			if _, dup := fields[t.Name.Local]; dup {
				return nil, fmt.Errorf("repeated field <%s>", t.Name.Local)
			}
			fields[t.Name.Local] = v.Text
		}
	}
}
