package sandbox

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// WeChat Pay API v3 trade bills: GET /v3/bill/tradebill (signed like every
// API answer) names a download link and the file's SHA1; GET
// /v3/billdownload/file serves the file, authenticated by the merchant's
// signature but, as on the real platform, not signed. The file is a CSV of
// backtick-prefixed cells: a header of 27 columns, one row per payment
// (交易状态 SUCCESS) and per refund (REFUND, with a negative fee), then a
// summary header and summary row; CRLF line ends; amounts in yuan. The
// download link names the real host (api.mch.weixin.qq.com), which clients
// pointed at the simulator rewrite like every other call.

// wechatPayBillHeader is the v3 trade bill's header.
var wechatPayBillHeader = []string{
	"交易时间", "公众账号ID", "商户号", "特约商户号", "设备号", "微信订单号", "商户订单号", "用户标识",
	"交易类型", "交易状态", "付款银行", "货币种类", "应结订单金额", "代金券金额", "微信退款单号", "商户退款单号",
	"退款金额", "充值券退款金额", "退款类型", "退款状态", "商品名称", "商户数据包", "手续费", "费率",
	"订单金额", "申请退款金额", "费率备注",
}

// wechatPayBillSummaryHeader is the summary header.
var wechatPayBillSummaryHeader = []string{
	"总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额",
}

// wechatPayRealHost is where the real platform's download links point.
const wechatPayRealHost = "https://api.mch.weixin.qq.com"

func (s *Sandbox) mountWeChatPayBill(r fiber.Router) {
	r.Get("/v3/bill/tradebill", s.wechatPayAPI("tradebill", s.wechatPayTradeBill))
	r.Get("/v3/billdownload/file", s.wechatPayBillDownload)
}

// wechatPayTradeBill serves GET /v3/bill/tradebill?bill_date&bill_type&tar_type.
func (s *Sandbox) wechatPayTradeBill(call *wechatPayCall) wechatPayReply {
	c := call.c
	day, err := time.ParseInLocation(time.DateOnly, c.Query("bill_date"), wechatPayZone)
	if err != nil {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "bill_date 格式须为yyyy-MM-DD")
	}
	if bt := c.Query("bill_type", "ALL"); bt != "ALL" {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "模拟器仅支持 bill_type=ALL")
	}
	tarType := c.Query("tar_type")
	if tarType != "" && tarType != "GZIP" {
		return wechatPayFail(http.StatusBadRequest, "PARAM_ERROR", "tar_type 仅支持GZIP")
	}
	now := s.now()
	account := "wechatpay:" + call.mchID
	ready, d := s.bills.readiness(account, day, now)
	switch ready {
	case billOutOfRange:
		return wechatPayFail(http.StatusBadRequest, "INVALID_REQUEST", "仅支持三个月内的账单下载申请，且不能是未来的日期")
	case billNotReady:
		return wechatPayFail(http.StatusBadRequest, "STATEMENT_CREATING", "账单生成中")
	}
	file, n := s.wechatPayBillFile(call.mchID, day, d)
	if n == 0 {
		return wechatPayFail(http.StatusBadRequest, "NO_STATEMENT_EXIST", "账单文件不存在")
	}
	sum := sha1.Sum(file)
	served := file
	if d.tamper {
		served = append(bytes.Replace(file, []byte("SUCCESS"), []byte("SUCCES5"), 1), "\r\n"...)
	}
	if tarType == "GZIP" {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		// Writes to a bytes.Buffer cannot fail.
		_, _ = zw.Write(served)
		_ = zw.Close()
		served = buf.Bytes()
	}
	token := s.bills.newToken(account, served, now)
	q := url.Values{"token": {token}}
	if tarType != "" {
		q.Set("tartype", strings.ToLower(tarType))
	}
	return wechatPayReply{status: http.StatusOK, body: map[string]string{
		"hash_type":    "SHA1",
		"hash_value":   hex.EncodeToString(sum[:]),
		"download_url": wechatPayRealHost + "/v3/billdownload/file?" + q.Encode(),
	}}
}

// wechatPayBillDownload serves a download link to the merchant it was made
// for. The answer is not signed.
func (s *Sandbox) wechatPayBillDownload(c *fiber.Ctx) error {
	call, fail := s.wechatPayAuthenticate(c)
	if call == nil || fail.status != 0 {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fail.status).JSON(fail.body)
	}
	file, ok := s.bills.file("wechatpay:"+call.mchID, c.Query("token"), s.now())
	if !ok {
		return c.Status(http.StatusBadRequest).JSON(map[string]string{
			"code": "INVALID_REQUEST", "message": "下载链接无效或已过期，请重新申请账单",
		})
	}
	c.Set("Request-Id", randomHex(16))
	if c.Query("tartype") == "gzip" {
		c.Set(fiber.HeaderContentType, "application/x-gzip")
	} else {
		c.Set(fiber.HeaderContentType, "text/plain; charset=utf-8")
	}
	return c.Send(file)
}

// wechatPayBillData collects mchID's payments and refunds that succeeded on
// day, with d applied.
func (s *Sandbox) wechatPayBillData(mchID string, day time.Time, d billDay) []simBillRow {
	st, now := s.wechatpay, s.now()
	st.mu.Lock()
	l := st.ledger(mchID)
	var rows []simBillRow
	for _, o := range l.orderList {
		if o.TransactionID == "" || !inDay(o.PaidAt, day) {
			continue
		}
		rows = append(rows, simBillRow{
			at: o.PaidAt, created: o.CreatedAt, appID: o.AppID, mchID: mchID, outTradeNo: o.OutTradeNo,
			transactionID: o.TransactionID, total: o.Total, description: o.Description, attach: o.Attach, payer: o.OpenID,
		})
	}
	for _, r := range l.refundList {
		st.settle(l, r, now, false)
		o := l.orders[r.OutTradeNo]
		if r.Status != wechatPayRefundSuccess || !inDay(r.SucceededAt, day) || o == nil {
			continue
		}
		rows = append(rows, simBillRow{
			refund: true, at: r.SucceededAt, created: o.CreatedAt, appID: o.AppID, mchID: mchID,
			outTradeNo: r.OutTradeNo, transactionID: r.TransactionID, outRefundNo: r.OutRefundNo, refundID: r.RefundID,
			total: o.Total, refundAmount: r.Amount, description: o.Description, attach: o.Attach, payer: o.OpenID,
		})
	}
	st.mu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].at.Before(rows[j].at) })
	return applyDivergences(rows, d, day, func(at time.Time) string {
		return "42000" + at.In(wechatPayZone).Format("20060102") + wechatPayDigits(15)
	})
}

// wechatPayBillFile renders mchID's trade bill for day and returns it with
// its number of detail rows.
func (s *Sandbox) wechatPayBillFile(mchID string, day time.Time, d billDay) ([]byte, int) {
	rows := s.wechatPayBillData(mchID, day, d)
	var b bytes.Buffer
	b.WriteString(strings.Join(wechatPayBillHeader, ",") + "\r\n")
	var settled, refunds, fees int64
	for _, r := range rows {
		fee := r.fee()
		fees += fee
		cells := []string{
			r.at.In(wechatPayZone).Format(time.DateTime), r.appID, r.mchID, "0", "", r.transactionID,
			r.outTradeNo, r.payer, "JSAPI", wechatPayTradeSuccess, "OTHERS", "CNY",
			yuan(r.total), "0.00", "0", "0", "0.00", "0.00", "", "",
			r.description, r.attach, yuan(fee), "0.60%", yuan(r.total), "0.00", "",
		}
		if r.refund {
			refunds += r.refundAmount
			cells[9] = wechatPayTradeRefund
			cells[12], cells[24] = "0.00", "0.00"
			cells[14], cells[15], cells[16] = r.refundID, r.outRefundNo, yuan(r.refundAmount)
			cells[18], cells[19], cells[25] = "ORIGINAL", wechatPayRefundSuccess, yuan(r.refundAmount)
		} else {
			settled += r.total
		}
		backtickCSV(&b, cells...)
	}
	b.WriteString(strings.Join(wechatPayBillSummaryHeader, ",") + "\r\n")
	backtickCSV(&b, strconv.Itoa(len(rows)), yuan(settled), yuan(refunds), "0.00", yuan(fees), yuan(settled), yuan(refunds))
	return b.Bytes(), len(rows)
}
