package wechat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Virtual payment pushes arrive through message push (protocols §N2.4):
// the usual envelope (ToUserName, FromUserName — a fixed WeChat account,
// not the user —, CreateTime, MsgType event, Event) and the event's fields,
// as JSON values or XML strings. Field names follow the majority of the
// sources (silenceper's message.go, Senparc, a third-party Go package):
// OpenId, Env, WeChatPayInfo, CoinInfo. silenceper's virtualpayment
// domain.go spells them openid, env, WechatPayInfo and tags CoinInfo
// "GoodsInfo"; those spellings are accepted too.

// Virtual payment push events.
const (
	XPayEventGoodsDeliver = "xpay_goods_deliver_notify"
	XPayEventCoinPay      = "xpay_coin_pay_notify"
	XPayEventRefund       = "xpay_refund_notify"
	XPayEventComplaint    = "xpay_complaint_notify"
)

// XPayEvents are the push events ParseXPayPush reads.
var XPayEvents = []string{XPayEventGoodsDeliver, XPayEventCoinPay, XPayEventRefund, XPayEventComplaint}

// XPayAck is the reply WeChat expects to virtual payment pushes; any
// other ErrCode (or body) makes it retry.
const XPayAck = `{"ErrCode":0,"ErrMsg":"success"}`

// XPayPush is a verified virtual payment push, read.
type XPayPush struct {
	Event  string
	OpenID string // the user
	Env    int    // XPayEnvProduction or XPayEnvSandbox

	// Goods delivery and coin payment.
	OutTradeNo    string
	Mode          string // XPayModeGoods or XPayModeCoins
	ProductID     string // goods
	Quantity      int64  // goods, or coins
	OrigPrice     int64  // fen
	ActualPrice   int64  // fen, what the user paid
	Attach        string
	MchOrderNo    string // WeChat Pay's merchant order number (WeChatPayInfo)
	TransactionID string // WeChat Pay's transaction id
	PaidAt        time.Time

	// Refund result.
	RefundID       string // MchRefundId: the merchant's refund_order_id
	WxRefundID     string
	WxOrderID      string
	RefundFee      int64
	RefundOK       bool // RetCode 0
	RefundMessage  string
	RefundedAt     time.Time
	RetryTimes     int64
	RefundTransfer string // WxpayRefundTransactionId

	// Complaint.
	ComplaintID     string
	ComplaintDetail string
	ComplaintAt     time.Time
}

// IsXPayEvent reports whether event is a virtual payment push.
func IsXPayEvent(event string) bool {
	for _, e := range XPayEvents {
		if e == event {
			return true
		}
	}
	return false
}

// pushFields reads a push's fields, tolerating the spellings the sources
// disagree on.
type pushFields struct {
	m   map[string]any
	err error
}

func (f *pushFields) value(names ...string) (any, bool) {
	for _, n := range names {
		if v, ok := f.m[n]; ok {
			return v, true
		}
	}
	return nil, false
}

func (f *pushFields) str(names ...string) string {
	v, ok := f.value(names...)
	if !ok || f.err != nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	}
	f.err = fmt.Errorf("field %s is not a string", names[0])
	return ""
}

func (f *pushFields) int(names ...string) int64 {
	s := strings.TrimSpace(f.str(names...))
	if s == "" || f.err != nil {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f.err = fmt.Errorf("field %s is not an integer", names[0])
	}
	return n
}

func (f *pushFields) time(names ...string) time.Time {
	return unixTime(f.int(names...))
}

// object returns the nested object under one of names (an empty one when
// absent).
func (f *pushFields) object(names ...string) *pushFields {
	v, ok := f.value(names...)
	if !ok || f.err != nil {
		return &pushFields{m: map[string]any{}}
	}
	m, ok := v.(map[string]any)
	if !ok {
		if s, isStr := v.(string); isStr && strings.TrimSpace(s) == "" {
			return &pushFields{m: map[string]any{}} // an empty XML element
		}
		f.err = fmt.Errorf("field %s is not an object", names[0])
		return &pushFields{m: map[string]any{}}
	}
	return &pushFields{m: m}
}

// ParseXPayPush reads the fields of a verified message push whose event is
// one of XPayEvents. Missing identifiers, non-numeric amounts and an env
// other than 0 or 1 are errors.
func ParseXPayPush(event string, fields map[string]any) (*XPayPush, error) {
	f := &pushFields{m: fields}
	p := &XPayPush{Event: event, OpenID: f.str("OpenId", "openid", "OpenID")}
	env := f.int("Env", "env")
	if env != XPayEnvProduction && env != XPayEnvSandbox {
		return nil, fmt.Errorf("xpay push: Env %d is neither 0 nor 1", env)
	}
	p.Env = int(env)
	switch event {
	case XPayEventGoodsDeliver, XPayEventCoinPay:
		p.OutTradeNo = f.str("OutTradeNo")
		pay := f.object("WeChatPayInfo", "WechatPayInfo")
		p.MchOrderNo, p.TransactionID, p.PaidAt = pay.str("MchOrderNo"), pay.str("TransactionId"), pay.time("PaidTime")
		var info *pushFields
		if event == XPayEventGoodsDeliver {
			p.Mode, info = XPayModeGoods, f.object("GoodsInfo")
			p.ProductID = info.str("ProductId")
		} else {
			p.Mode, info = XPayModeCoins, f.object("CoinInfo", "GoodsInfo")
		}
		p.Quantity, p.OrigPrice, p.ActualPrice = info.int("Quantity"), info.int("OrigPrice"), info.int("ActualPrice")
		p.Attach = info.str("Attach")
		err := errors.Join(f.err, pay.err, info.err)
		if err == nil && (p.OutTradeNo == "" || p.OpenID == "") {
			err = errors.New("OutTradeNo and OpenId are required")
		}
		if err != nil {
			return nil, fmt.Errorf("xpay push %s: %w", event, err)
		}
	case XPayEventRefund:
		p.RefundID, p.WxRefundID = f.str("MchRefundId"), f.str("WxRefundId")
		p.OutTradeNo, p.WxOrderID = f.str("MchOrderId"), f.str("WxOrderId")
		p.RefundFee = f.int("RefundFee")
		p.RefundOK = f.int("RetCode") == 0
		p.RefundMessage = f.str("RetMsg")
		p.RefundedAt = f.time("RefundSuccTimestamp")
		p.RetryTimes = f.int("RetryTimes")
		p.RefundTransfer = f.str("WxpayRefundTransactionId")
		if _, ok := f.value("RetCode"); !ok && f.err == nil {
			f.err = errors.New("RetCode is required")
		}
		if f.err == nil && (p.RefundID == "" || p.OutTradeNo == "") {
			f.err = errors.New("MchRefundId and MchOrderId are required")
		}
		if f.err != nil {
			return nil, fmt.Errorf("xpay push %s: %w", event, f.err)
		}
	case XPayEventComplaint:
		p.OutTradeNo, p.WxOrderID = f.str("MchOrderId"), f.str("WxOrderId")
		p.TransactionID, p.ComplaintID = f.str("TransactionId"), f.str("ComplaintId")
		p.ComplaintDetail, p.ComplaintAt = f.str("ComplaintDetail"), f.time("ComplaintTime")
		p.RetryTimes = f.int("RetryTimes")
		if f.err == nil && p.ComplaintID == "" {
			f.err = errors.New("ComplaintId is required")
		}
		if f.err != nil {
			return nil, fmt.Errorf("xpay push %s: %w", event, f.err)
		}
	default:
		return nil, fmt.Errorf("xpay push: %q is not a virtual payment event", event)
	}
	return p, nil
}

// DedupKey identifies the push across WeChat's retries, which may be sent
// with a new CreateTime (and count RetryTimes up): the order for deliveries
// and coin payments (one per order), the refund for refund results, the
// complaint for complaints. The default key of event pushes
// (FromUserName+CreateTime+Event) would not do: FromUserName is the same
// WeChat account for every user.
func (p *XPayPush) DedupKey() string {
	switch p.Event {
	case XPayEventRefund:
		return p.Event + ":" + p.RefundID
	case XPayEventComplaint:
		return p.Event + ":" + p.ComplaintID
	}
	return p.Event + ":" + p.OutTradeNo
}
