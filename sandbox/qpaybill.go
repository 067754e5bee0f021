package sandbox

import (
	"bytes"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// QQ wallet statements (对账单): POST
// /cgi-bin/sp_download/qpay_mch_statement_down.cgi with a signed XML body
// (appid, mch_id, nonce_str, bill_date yyyyMMdd, bill_type ALL, sign)
// answers the statement as CSV text, or an XML document with return_code
// FAIL. The column names follow a public QQ wallet client's list; the
// layout around them (backtick-prefixed cells, a summary header and summary
// row at the end, the "No Bill Exist" / "Bill Creating" failures) is
// modelled on WeChat Pay v2's downloadbill, which QQ wallet's API mirrors:
// nobody here could confirm QQ's own documentation.

// qpayBillHeader is the statement's header (bill_type ALL).
var qpayBillHeader = []string{
	"交易时间", "商户号", "商户APPID", "子商户号", "子商户APPID", "用户标识", "设备号", "支付方式", "商户订单号",
	"QQ钱包订单号", "付款银行", "货币种类", "订单金额", "商户优惠金额", "商户应收金额", "QQ钱包优惠金额", "用户支付金额",
	"交易状态", "退款提交时间", "商户退款订单号", "QQ钱包退款订单号", "退款金额", "退还QQ钱包优惠金额", "退款状态",
	"退款成功时间", "退款方式", "商品名称", "商户数据包", "手续费金额", "费率",
}

// qpayBillSummaryHeader is the summary header.
var qpayBillSummaryHeader = []string{"总交易单数", "总交易额", "总退款金额", "总QQ钱包优惠退款金额", "手续费总金额"}

func (s *Sandbox) mountQPayBill(r fiber.Router) {
	r.Post("/cgi-bin/sp_download/qpay_mch_statement_down.cgi", s.qpayStatement)
}

// qpayStatement serves a statement download.
func (s *Sandbox) qpayStatement(c *fiber.Ctx) error {
	fields, err := qpayParseXML(c.Body())
	if err != nil || len(c.Body()) > qpayMaxRequest {
		return qpayCommFail(c, "XML_FORMAT_ERROR")
	}
	apps := s.appsWhere(func(a *App) bool {
		return a.Platform == QQ && a.QPay != nil && a.QPay.MchID == fields["mch_id"]
	})
	switch {
	case fields["mch_id"] == "" || len(apps) == 0:
		return qpayCommFail(c, "mch_id not exist")
	case !qpaySignValid(fields, apps[0].QPay.APIKey):
		return qpayCommFail(c, "SIGNERROR")
	case fields["nonce_str"] == "":
		return qpayCommFail(c, "nonce_str is required")
	}
	if bt := fields["bill_type"]; bt != "" && bt != "ALL" {
		return qpayCommFail(c, "the simulator serves bill_type ALL only")
	}
	day, err := time.ParseInLocation("20060102", fields["bill_date"], qpayZone)
	if err != nil {
		return qpayCommFail(c, "invalid bill_date")
	}
	mchID := apps[0].QPay.MchID
	ready, d := s.bills.readiness("qpay:"+mchID, day, s.now())
	switch ready {
	case billOutOfRange:
		return qpayCommFail(c, "invalid bill_date")
	case billNotReady:
		return qpayCommFail(c, "Bill Creating")
	}
	file, n := s.qpayBillFile(mchID, day, d)
	if n == 0 {
		return qpayCommFail(c, "No Bill Exist")
	}
	c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
	return c.Status(http.StatusOK).Send(file)
}

// qpayBillFile renders mchID's statement for day and returns it with its
// number of detail rows.
func (s *Sandbox) qpayBillFile(mchID string, day time.Time, d billDay) ([]byte, int) {
	st, now := s.qpay, s.now()
	st.mu.Lock()
	l := st.ledger(mchID)
	var rows []simBillRow
	for _, o := range l.orderList {
		if o.TransactionID != "" && inDay(o.PaidAt, day) {
			rows = append(rows, simBillRow{
				at: o.PaidAt, created: o.CreatedAt, appID: o.AppID, mchID: mchID, outTradeNo: o.OutTradeNo,
				transactionID: o.TransactionID, total: o.Total, description: o.Body, attach: o.Attach, payer: o.OpenID,
			})
		}
	}
	for _, r := range l.refundList {
		r.settle(now)
		o := l.orders[r.OutTradeNo]
		if r.Status != qpayRefundSuccess || !inDay(r.SucceededAt, day) || o == nil {
			continue
		}
		rows = append(rows, simBillRow{
			refund: true, at: r.SucceededAt, created: r.CreatedAt, appID: o.AppID, mchID: mchID,
			outTradeNo: r.OutTradeNo, transactionID: r.TransactionID, outRefundNo: r.OutRefundNo, refundID: r.RefundID,
			total: o.Total, refundAmount: r.Amount, description: o.Body, attach: o.Attach, payer: o.OpenID,
		})
	}
	st.mu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].at.Before(rows[j].at) })
	rows = applyDivergences(rows, d, day, func(at time.Time) string {
		return "1" + mchID + at.In(qpayZone).Format("20060102") + qpayDigits(9)
	})

	ts := func(t time.Time) string { return t.In(qpayZone).Format(time.DateTime) }
	var b bytes.Buffer
	b.WriteString(strings.Join(qpayBillHeader, ",") + "\r\n")
	var total, refunds, fees int64
	for _, r := range rows {
		fee := r.fee()
		fees += fee
		cells := []string{
			ts(r.at), mchID, r.appID, "", "", r.payer, "", "MINIAPP", r.outTradeNo, r.transactionID, "BALANCE", "CNY",
			yuan(r.total), "0.00", yuan(r.total), "0.00", yuan(r.total), qpayTradeSuccess,
			"", "", "", "0.00", "0.00", "", "", "", r.description, r.attach, yuan(fee), "0.60%",
		}
		if r.refund {
			refunds += r.refundAmount
			cells[12], cells[14], cells[16] = "0.00", "0.00", "0.00"
			cells[17], cells[18], cells[19], cells[20] = qpayTradeRefund, ts(r.created), r.outRefundNo, r.refundID
			cells[21], cells[23], cells[24], cells[25] = yuan(r.refundAmount), qpayRefundSuccess, ts(r.at), "ORIGINAL"
		} else {
			total += r.total
		}
		backtickCSV(&b, cells...)
	}
	b.WriteString(strings.Join(qpayBillSummaryHeader, ",") + "\r\n")
	backtickCSV(&b, strconv.Itoa(len(rows)), yuan(total), yuan(refunds), "0.00", yuan(fees))
	return b.Bytes(), len(rows)
}
