package sandbox

import (
	"archive/zip"
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// Alipay trade bills: alipay.data.dataservice.bill.downloadurl.query
// {bill_type: "trade", bill_date: "yyyy-MM-dd"} answers bill_download_url, a
// short-lived link to a zip of two GBK CSV files: the detail
// (…_业务明细.csv) and the summary (…_业务明细(汇总).csv). Both open with
// '#' preamble lines and end with '#' footer lines; ids in the detail end
// with a TAB (so spreadsheets keep them as text); 业务类型 is 交易 or 退款,
// refunds with negative amounts; 服务费 is negative on payments (the fee
// taken) and positive on refunds (the fee returned). An empty day is a zip
// with headers, zero totals and no rows. The link points back at the
// simulator's gateway, as the caller reached it.

const (
	alipayBillMethod = "alipay.data.dataservice.bill.downloadurl.query"
	alipayBillPath   = "/downloadBillFile.resource"
)

// alipayBillDetailHeader is the detail file's header.
var alipayBillDetailHeader = []string{
	"支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称", "操作员",
	"终端号", "对方账户", "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）",
	"商家优惠（元）", "券核销金额（元）", "券名称", "商家红包消费金额（元）", "卡消费金额（元）", "退款批次号/请求号",
	"服务费（元）", "分润（元）", "备注",
}

// alipayBillSummaryHeader is the summary file's header.
var alipayBillSummaryHeader = []string{
	"门店编号", "门店名称", "交易订单总笔数", "退款订单总笔数", "订单金额（元）", "商家实收（元）", "支付宝优惠（元）",
	"商家优惠（元）", "卡消费金额（元）", "服务费（元）", "分润（元）", "实收净额（元）",
}

// alipayBillDownloadURL serves alipay.data.dataservice.bill.downloadurl.query.
func (s *Sandbox) alipayBillDownloadURL(c *alipayCall) (map[string]any, error) {
	v, err := c.bizStrings("bill_type", "bill_date")
	if err != nil {
		return nil, err
	}
	switch {
	case v[0] != "trade":
		return nil, invalidArg("isv.invalid-arguments", "bill_type: the simulator serves trade bills only")
	case len(v[1]) != len(time.DateOnly):
		return nil, invalidArg("isv.invalid-arguments", "bill_date must be yyyy-MM-dd (the simulator has no monthly bills)")
	}
	day, err := time.ParseInLocation(time.DateOnly, v[1], alipayZone)
	if err != nil {
		return nil, invalidArg("isv.invalid-arguments", "bill_date must be yyyy-MM-dd")
	}
	account := "alipay:" + c.app.AppID
	ready, d := s.bills.readiness(account, day, c.now)
	switch ready {
	case billOutOfRange:
		return nil, invalidArg("isv.invalid-arguments", "bill_date is in the future or too old")
	case billNotReady:
		return nil, acqFault("isp.bill_not_exist", "账单不存在")
	}
	file, err := s.alipayBillZip(c.app, day, d, c.now)
	if err != nil {
		return nil, err
	}
	token := s.bills.newToken(account, file, c.now)
	pid := alipayBillPID(c.app)
	name := alipayBillZipName(c.app, day)
	q := url.Values{
		"bizType": {"trade"}, "userId": {pid}, "fileType": {"csv.zip"}, "bizDates": {day.Format("20060102")},
		"downloadFileName": {name}, "fileId": {"/trade/" + pid + "/" + day.Format("20060102") + ".csv.zip"},
		"timestamp": {strconv.FormatInt(c.now.UnixMilli(), 10)}, "token": {token}, "appId": {c.app.AppID},
	}
	return map[string]any{"bill_download_url": c.origin + alipayBillPath + "?" + q.Encode()}, nil
}

// alipayBillDownload serves a download link: the token is the credential,
// as on the real platform.
func (s *Sandbox) alipayBillDownload(c *fiber.Ctx) error {
	file, ok := s.bills.file("alipay:"+c.Query("appId"), c.Query("token"), s.now())
	if !ok {
		c.Set(fiber.HeaderContentType, "text/html; charset=utf-8")
		return c.Status(http.StatusNotFound).SendString("<html><body>下载链接已失效</body></html>")
	}
	c.Set(fiber.HeaderContentType, "application/oct-stream")
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+c.Query("downloadFileName")+`"`)
	return c.Send(file)
}

// alipayBillPID is the merchant's partner id, which names the bill files.
func alipayBillPID(a *App) string {
	if a.Alipay != nil && a.Alipay.SellerID != "" {
		return a.Alipay.SellerID
	}
	return "2088" + strings.Repeat("0", 12)
}

func alipayBillZipName(a *App, day time.Time) string {
	return alipayBillPID(a) + "_" + day.Format("20060102") + ".csv.zip"
}

// alipayBillData collects app's payments and refunds of day, with d applied.
func (s *Sandbox) alipayBillData(a *App, day time.Time, d billDay) []simBillRow {
	st := s.alipay
	st.mu.Lock()
	var rows []simBillRow
	for _, t := range st.trades {
		if t.AppID != a.AppID {
			continue
		}
		buyer := t.BuyerID
		if buyer == "" {
			buyer = t.BuyerOpenID
		}
		base := simBillRow{
			created: t.Created, appID: t.AppID, outTradeNo: t.OutTradeNo, transactionID: t.TradeNo,
			total: t.Total, description: t.Subject, payer: buyer,
		}
		if inDay(t.Paid, day) {
			p := base
			p.at = t.Paid
			rows = append(rows, p)
		}
		for _, r := range t.Refunds {
			if inDay(r.At, day) {
				rf := base
				rf.refund, rf.at, rf.outRefundNo, rf.refundAmount = true, r.At, r.OutRequestNo, r.Amount
				rows = append(rows, rf)
			}
		}
	}
	st.mu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool {
		if !rows[i].at.Equal(rows[j].at) {
			return rows[i].at.Before(rows[j].at)
		}
		return rows[i].outTradeNo < rows[j].outTradeNo
	})
	st.mu.Lock()
	defer st.mu.Unlock()
	return applyDivergences(rows, d, day, func(at time.Time) string { return st.newTradeNo(at) })
}

// alipayBillZip renders app's bill for day as the platform's zip of GBK CSVs.
func (s *Sandbox) alipayBillZip(a *App, day time.Time, d billDay, now time.Time) ([]byte, error) {
	rows := s.alipayBillData(a, day, d)
	pid := alipayBillPID(a)
	stamp := func(t time.Time) string { return t.In(alipayZone).Format("2006年01月02日 15:04:05") }
	period := "#起始日期：[" + stamp(day) + "]   终止日期：[" + stamp(day.AddDate(0, 0, 1)) + "]"
	ts := func(t time.Time) string { return t.In(alipayZone).Format(time.DateTime) }

	var detail strings.Builder
	detail.WriteString("#支付宝业务明细查询\r\n#账号：[" + pid + "0156]\r\n" + period + "\r\n")
	detail.WriteString("#-----------------------------------------业务明细列表----------------------------------------\r\n")
	detail.WriteString(strings.Join(alipayBillDetailHeader, ",") + "\r\n")
	var payN, refundN int
	var paid, refunded, fees int64
	for _, r := range rows {
		kind, amount, refundNo := "交易", r.total, ""
		if r.refund {
			kind, amount, refundNo = "退款", -r.refundAmount, r.outRefundNo+"\t"
			refundN++
			refunded += r.refundAmount
		} else {
			payN++
			paid += r.total
		}
		fees += r.fee()
		cells := []string{
			r.transactionID + "\t", r.outTradeNo + "\t", kind, alipayBillCell(r.description), ts(r.created), ts(r.at),
			"", "", "", "", alipayMask(r.payer), yuan(amount), yuan(amount), "0.00", "0.00", "0.00", "0.00", "0.00", "",
			"0.00", "0.00", refundNo, yuan(-r.fee()), "0.00", "",
		}
		detail.WriteString(strings.Join(cells, ",") + "\r\n")
	}
	detail.WriteString("#-----------------------------------------业务明细列表结束------------------------------------\r\n")
	fmt.Fprintf(&detail, "#交易合计：%d笔，商家实收：%s元，商家优惠：0.00元\r\n", payN, yuan(paid))
	fmt.Fprintf(&detail, "#退款合计：%d笔，商家实收：%s元，商家优惠：0.00元\r\n", refundN, yuan(-refunded))
	detail.WriteString("#导出时间：[" + stamp(now) + "]\r\n")

	var summary strings.Builder
	summary.WriteString("#支付宝业务汇总查询\r\n#账号：[" + pid + "0156]\r\n" + period + "\r\n")
	summary.WriteString("#-----------------------------------------业务汇总列表----------------------------------------\r\n")
	summary.WriteString(strings.Join(alipayBillSummaryHeader, ",") + "\r\n")
	net := paid - refunded
	totals := []string{strconv.Itoa(payN), strconv.Itoa(refundN), yuan(net), yuan(net), "0.00", "0.00", "0.00", yuan(-fees), "0.00", yuan(net - fees)}
	summary.WriteString(",," + strings.Join(totals, ",") + "\r\n")
	summary.WriteString("合计,," + strings.Join(totals, ",") + "\r\n")
	summary.WriteString("#-----------------------------------------业务汇总列表结束------------------------------------\r\n")
	summary.WriteString("#导出时间：[" + stamp(now) + "]\r\n")

	base := pid + "_" + day.Format("20060102")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct{ name, text string }{
		{base + "_业务明细.csv", detail.String()},
		{base + "_业务明细(汇总).csv", summary.String()},
	} {
		name, err := gbk(f.name)
		if err != nil {
			return nil, err
		}
		body, err := gbk(f.text)
		if err != nil {
			return nil, err
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: string(name), NonUTF8: true, Method: zip.Deflate, Modified: now})
		if err != nil {
			return nil, fmt.Errorf("sandbox: alipay bill: %w", err)
		}
		if _, err := w.Write(body); err != nil {
			return nil, fmt.Errorf("sandbox: alipay bill: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("sandbox: alipay bill: %w", err)
	}
	return buf.Bytes(), nil
}

// gbk encodes s as GBK, the encoding of Alipay's bill files; characters
// GBK lacks (emoji in a subject) become '?'.
func gbk(s string) ([]byte, error) {
	b, err := encoding.ReplaceUnsupported(simplifiedchinese.GBK.NewEncoder()).Bytes([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("sandbox: alipay bill: GBK: %w", err)
	}
	return b, nil
}

// alipayBillCell keeps a free-text cell from breaking the CSV line.
func alipayBillCell(s string) string {
	return strings.NewReplacer(",", "，", "\r", " ", "\n", " ", "\"", "'").Replace(s)
}

// alipayMask masks an account as the bill shows the counterparty.
func alipayMask(s string) string {
	if len(s) < 8 {
		return s
	}
	return s[:3] + "****" + s[len(s)-4:]
}
