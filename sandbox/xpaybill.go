package sandbox

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Virtual payment bills: POST /xpay/download_bill {begin_ds, end_ds}
// (yyyymmdd; SP sends strings, WxJava numbers: both are accepted) answers
// {url}, or 268490011 while the bill is being generated; the url serves the
// file. The body has no env: bills are production's (env 0), and the
// request is signed with the production AppKey.
//
// The file's layout is modelled (no public description was found): a UTF-8
// CSV with a header row, one row per payment (交易类型 支付) and per
// succeeded refund (退款); amounts in fen, as silenceper's comment on
// download_bill says (账单中金额相关字段是以分为单位).

// xpayBillHeader is the modelled bill's header.
var xpayBillHeader = []string{
	"交易时间", "交易类型", "商户订单号", "微信订单号", "微信支付订单号", "商户退款单号", "微信退款单号",
	"支付模式", "道具ID", "购买数量", "订单金额", "退款金额", "技术服务费", "用户openid",
}

// xpayBillMaxDays bounds one download_bill's range.
const xpayBillMaxDays = 31

// xpayBillAccount names an app's virtual payment books for bills.
func xpayBillAccount(a *App) string { return "xpay:" + a.AppID }

// xpayDay reads begin_ds / end_ds as a day in Asia/Shanghai.
func xpayDay(v any) (time.Time, bool) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	default:
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("20060102", s, wechatPayZone)
	return t, err == nil
}

func (s *Sandbox) xpayDownloadBill(call *xpayCall) error {
	begin, ok1 := xpayDay(call.body["begin_ds"])
	end, ok2 := xpayDay(call.body["end_ds"])
	if !ok1 || !ok2 || end.Before(begin) || end.Sub(begin) > xpayBillMaxDays*24*time.Hour {
		return wechatError(call.c, xpayErrParam, "begin_ds and end_ds must be yyyymmdd, begin ≤ end, at most 31 days")
	}
	account, now := xpayBillAccount(call.a), s.now()
	var days []billDay
	for day := begin; !day.After(end); day = day.AddDate(0, 0, 1) {
		ready, d := s.bills.readiness(account, day, now)
		switch ready {
		case billOutOfRange:
			return wechatError(call.c, xpayErrParam, "bills cover the last 90 days, not the future")
		case billNotReady:
			return wechatError(call.c, xpayErrBillPending, "账单数据生成中，请稍后调用本接口获取")
		}
		days = append(days, d)
	}
	var file bytes.Buffer
	for i, d := range days {
		part := s.xpayBillFile(call.a, begin.AddDate(0, 0, i), d)
		if i > 0 {
			part = part[bytes.IndexByte(part, '\n')+1:] // one header
		}
		file.Write(part)
	}
	tok := s.bills.newToken(account, file.Bytes(), now)
	prefix := strings.TrimSuffix(call.c.Path(), "/xpay/"+call.api)
	return xpayOK(call.c, fiber.Map{"url": call.c.BaseURL() + prefix + "/xpay/bill_file/" + tok})
}

// xpayServeBill serves a download link made by download_bill (no
// authentication: the link is the secret, and it expires).
func (s *Sandbox) xpayServeBill(c *fiber.Ctx) error {
	tok := c.Params("token")
	s.bills.mu.Lock()
	t := s.bills.tokens[tok]
	s.bills.mu.Unlock()
	if t == nil || !strings.HasPrefix(t.account, "xpay:") {
		return fiber.NewError(fiber.StatusNotFound, "no such bill link")
	}
	file, ok := s.bills.file(t.account, tok, s.now())
	if !ok {
		return fiber.NewError(fiber.StatusNotFound, "the bill link expired")
	}
	c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	return c.Send(file)
}

// xpayBillFile renders app a's production virtual payment bill for day.
func (s *Sandbox) xpayBillFile(a *App, day time.Time, d billDay) []byte {
	st := s.xpay
	st.mu.Lock()
	var rows []simBillRow
	products := map[string]string{}
	for _, o := range st.orders {
		if o.app != a.ID || o.env != 0 {
			continue
		}
		switch {
		case o.orderType == 0 && inDay(o.paidAt, day):
			rows = append(rows, simBillRow{at: o.paidAt, created: o.created, appID: a.AppID, outTradeNo: o.orderID,
				transactionID: o.wxOrderID, total: o.fee, description: o.mode, attach: strconv.FormatInt(o.quantity, 10), payer: o.openid})
			products[o.orderID] = o.productID
		case o.orderType == 1 && o.status == xpayStatusRefunded && inDay(o.paidAt, day):
			p := st.orders[xpayKey(o.app, o.env, o.payOrderID)]
			rows = append(rows, simBillRow{refund: true, at: o.paidAt, created: o.created, appID: a.AppID,
				outTradeNo: p.orderID, transactionID: p.wxOrderID, outRefundNo: o.orderID, refundID: o.wxOrderID,
				total: p.fee, refundAmount: o.refundFee, description: p.mode, attach: strconv.FormatInt(p.quantity, 10), payer: o.openid})
			products[p.orderID] = p.productID
		}
	}
	st.mu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].at.Before(rows[j].at) })
	rows = applyDivergences(rows, d, day, func(at time.Time) string {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.newWxOrderID(at)
	})
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(xpayBillHeader)
	for _, r := range rows {
		kind, refund := "支付", ""
		if r.refund {
			kind, refund = "退款", strconv.FormatInt(r.refundAmount, 10)
		}
		_ = w.Write([]string{
			r.at.In(wechatPayZone).Format(time.DateTime), kind, r.outTradeNo, r.transactionID, "",
			r.outRefundNo, r.refundID, r.description, products[r.outTradeNo], r.attach,
			strconv.FormatInt(r.total, 10), refund, strconv.FormatInt(r.fee(), 10), r.payer,
		})
	}
	w.Flush()
	return b.Bytes()
}
