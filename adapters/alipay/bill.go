package alipay

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/smartwalle/alipay/v3"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/reconcile"
)

// billDownloadTimeout bounds a bill file download: bills can be large, and
// the link lives 30 seconds.
const billDownloadTimeout = 30 * time.Second

// billNotExist is the sub_code Alipay answers for a bill it does not have
// (yet).
const billNotExist = "isp.bill_not_exist"

var _ reconcile.BillSource = (*Pay)(nil)

// DownloadBill downloads and parses the app's trade bill for date
// (reconcile.BillSource): alipay.data.dataservice.bill.downloadurl.query
// {bill_type: trade} names a short-lived link, whose file is a zip of GBK
// CSVs (ParseBillZip). A bill Alipay does not have (isp.bill_not_exist) is
// a *reconcile.NotReadyError: Alipay produces a bill, with zero totals,
// for a day without trades.
func (p *Pay) DownloadBill(ctx context.Context, date reconcile.Date) (bill *reconcile.Bill, err error) {
	const api = "alipay.data.dataservice.bill.downloadurl.query"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	var rsp *alipay.BillDownloadURLQueryRsp
	err = guard(func() (err error) {
		rsp, err = p.sdk.BillDownloadURLQuery(ctx, alipay.BillDownloadURLQuery{BillType: "trade", BillDate: date.String()})
		return err
	})
	if err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false); err != nil {
		if pe, ok := adapters.AsPlatformError(err); ok && pe.SubCode == billNotExist {
			return nil, reconcile.NewNotReady(Platform, date, p.now())
		}
		return nil, err
	}
	if rsp.BillDownloadURL == "" {
		return nil, badResponse(api, "no bill_download_url in the answer", nil)
	}
	raw, err := downloadBillFile(ctx, rsp.BillDownloadURL)
	if err != nil {
		return nil, err
	}
	if bill, err = ParseBillZip(date, raw); err != nil {
		return nil, badResponse("bill_download", err.Error(), err)
	}
	return bill, nil
}

// downloadBillFile fetches the zip. The link carries its own credential.
func downloadBillFile(ctx context.Context, u string) ([]byte, error) {
	const api = "bill_download"
	hc, err := adapters.NewHTTPClient(billDownloadTimeout, "", "")
	if err != nil {
		return nil, fmt.Errorf("alipay: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, badResponse(api, "bill_download_url is not a URL", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The link's query is its credential: keep it out of errors and logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
		}
		return nil, adapters.TransportError(Platform, api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &adapters.PlatformError{Platform: Platform, API: api, Reason: adapters.ReasonBadResponse,
			HTTPStatus: resp.StatusCode, Message: "the bill download link answered " + resp.Status}
	}
	raw, err := reconcile.ReadBill(resp.Body)
	if errors.Is(err, reconcile.ErrTooLarge) {
		return nil, badResponse(api, "bill too large", err)
	}
	if err != nil {
		return nil, adapters.TransportError(Platform, api, err)
	}
	return raw, nil
}

// Alipay bill columns. Amount columns are named with full-width
// parentheses; the ASCII spelling is accepted too.
var (
	billColTradeNo    = []string{"支付宝交易号"}
	billColOutTradeNo = []string{"商户订单号"}
	billColType       = []string{"业务类型"}
	billColCreated    = []string{"创建时间"}
	billColFinished   = []string{"完成时间"}
	billColAmount     = []string{"订单金额（元）", "订单金额(元)"}
	billColReceived   = []string{"商家实收（元）", "商家实收(元)"}
	billColRefundNo   = []string{"退款批次号/请求号"}
	billColFee        = []string{"服务费（元）", "服务费(元)"}
	billSumPayments   = []string{"交易订单总笔数"}
	billSumFee        = billColFee
)

// 业务类型 values.
const (
	billTypeTrade  = "交易"
	billTypeRefund = "退款"
)

// billFooterRE matches the detail file's totals lines, e.g.
// "#交易合计：3笔，商家实收：3.00元，商家优惠：0.00元".
var billFooterRE = regexp.MustCompile(`^#\s*(交易|退款)合计\s*[:：]\s*(\d+)\s*笔\s*[,，]\s*商家实收\s*[:：]\s*(-?[0-9.]+)\s*元`)

// ParseBillZip parses Alipay's trade bill zip: the detail file (the CSV
// whose header has 支付宝交易号) and, when present, the summary file (the
// one with 交易订单总笔数), both usually GBK. Files are recognised by
// content, not by their (GBK-encoded) names.
func ParseBillZip(date reconcile.Date, data []byte) (*reconcile.Bill, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, &reconcile.ParseError{Platform: Platform, Msg: "not a zip: " + err.Error()}
	}
	var detail, summary []byte
	var budget int64 = reconcile.MaxBillBytes
	for i, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		body, err := readZipFile(f, budget)
		if err != nil {
			return nil, &reconcile.ParseError{Platform: Platform, Line: i + 1, Msg: err.Error()}
		}
		budget -= int64(len(body))
		text, err := reconcile.DecodeText(body)
		if err != nil {
			return nil, &reconcile.ParseError{Platform: Platform, Line: i + 1, Msg: err.Error()}
		}
		switch {
		case strings.Contains(text, billColTradeNo[0]) && detail == nil:
			detail = body
		case strings.Contains(text, billSumPayments[0]) && summary == nil:
			summary = body
		}
	}
	if detail == nil {
		return nil, &reconcile.ParseError{Platform: Platform, Msg: "the zip has no detail file (业务明细)"}
	}
	bill, err := ParseBillDetail(date, detail)
	if err != nil {
		return nil, err
	}
	if summary != nil && bill.Summary != nil {
		fees, ok, err := parseBillSummaryFees(summary)
		if err != nil {
			return nil, err
		}
		if ok {
			bill.Summary.Fees = fees
		}
	}
	return bill, nil
}

func readZipFile(f *zip.File, budget int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(budget) {
		return nil, reconcile.ErrTooLarge
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, budget+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > budget {
		return nil, reconcile.ErrTooLarge
	}
	return b, nil
}

// ParseBillDetail parses the detail CSV (业务明细): '#' preamble lines, the
// header, one row per 交易 (payment) or 退款 (refund, negative amounts),
// '#' footer lines with the totals. Rows of other 业务类型 are skipped. ids
// lose their trailing TAB. The summary's Count, Amount and Refunds come
// from the 交易合计 / 退款合计 footer lines (Alipay's totals of 商家实收);
// its Fees are the rows' until the summary file says otherwise. A refund
// row without a 退款批次号/请求号 is Alipay's default request number, the
// out_trade_no.
func ParseBillDetail(date reconcile.Date, data []byte) (*reconcile.Bill, error) {
	text, err := reconcile.DecodeText(data)
	if err != nil {
		return nil, &reconcile.ParseError{Platform: Platform, Msg: err.Error()}
	}
	bill := &reconcile.Bill{Platform: Platform, Date: date}
	var (
		head     reconcile.Header
		sum      reconcile.Summary
		footers  int
		computed int64
	)
	for i, line := range reconcile.Lines(text) {
		lineNo := i + 1
		bad := func(format string, args ...any) error {
			return &reconcile.ParseError{Platform: Platform, Line: lineNo, Msg: fmt.Sprintf(format, args...)}
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(trimmed, "#"):
			m := billFooterRE.FindStringSubmatch(trimmed)
			if m == nil {
				continue
			}
			n, err := strconv.Atoi(m[2])
			if err != nil {
				return nil, bad("footer count %q", m[2])
			}
			amount, err := reconcile.ParseAmount(m[3])
			if err != nil {
				return nil, bad("footer: %v", err)
			}
			if m[1] == billTypeTrade {
				sum.Count += n
				sum.Amount = amount
			} else {
				sum.Count += n
				sum.Refunds = reconcile.AbsFen(amount)
			}
			footers++
			continue
		}
		cells, err := reconcile.SplitCSV(line)
		if err != nil {
			return nil, bad("%v", err)
		}
		if head == nil {
			head = reconcile.NewHeader(cells)
			if !head.Has(billColTradeNo[0], billColOutTradeNo[0], billColType[0]) {
				return nil, bad("no detail header (支付宝交易号, 商户订单号, 业务类型)")
			}
			continue
		}
		row, ok, err := parseDetailRow(head, cells)
		if err != nil {
			return nil, bad("%v", err)
		}
		if ok {
			bill.Rows = append(bill.Rows, row)
			computed += row.Fee
		}
	}
	if head == nil && len(bill.Rows) == 0 && footers == 0 {
		return nil, &reconcile.ParseError{Platform: Platform, Msg: "no detail header (支付宝交易号, 商户订单号, 业务类型)"}
	}
	if footers == 2 {
		sum.Fees = computed
		bill.Summary = &sum
	}
	return bill, nil
}

func parseDetailRow(h reconcile.Header, cells []string) (reconcile.Row, bool, error) {
	var r reconcile.Row
	switch h.Get(cells, billColType...) {
	case billTypeTrade:
		r.Kind = reconcile.KindPayment
	case billTypeRefund:
		r.Kind = reconcile.KindRefund
	default:
		return r, false, nil
	}
	r.Status = h.Get(cells, billColType...)
	r.TransactionID, r.OutTradeNo = h.Get(cells, billColTradeNo...), h.Get(cells, billColOutTradeNo...)
	if r.OutTradeNo == "" {
		return r, false, errors.New("no 商户订单号")
	}
	at := h.Get(cells, billColFinished...)
	if at == "" {
		at = h.Get(cells, billColCreated...)
	}
	var err error
	if r.Time, err = reconcile.ParseTime(at); err != nil {
		return r, false, err
	}
	if r.Amount, err = reconcile.ParseAmount(h.Get(cells, billColAmount...)); err != nil {
		return r, false, fmt.Errorf("订单金额: %w", err)
	}
	r.Settled = r.Amount
	if v := h.Get(cells, billColReceived...); v != "" {
		if r.Settled, err = reconcile.ParseAmount(v); err != nil {
			return r, false, fmt.Errorf("商家实收: %w", err)
		}
	}
	fee, err := reconcile.ParseAmountOr0(h.Get(cells, billColFee...))
	if err != nil {
		return r, false, fmt.Errorf("服务费: %w", err)
	}
	r.Amount, r.Settled, r.Fee = reconcile.AbsFen(r.Amount), reconcile.AbsFen(r.Settled), -fee
	if r.Kind == reconcile.KindRefund {
		r.OutRefundNo = h.Get(cells, billColRefundNo...)
		if r.OutRefundNo == "" {
			r.OutRefundNo = r.OutTradeNo
		}
	}
	return r, true, nil
}

// parseBillSummaryFees reads the net fee (as a cost to the merchant) from
// the summary file's 合计 row; ok is false when the file has none.
func parseBillSummaryFees(data []byte) (int64, bool, error) {
	text, err := reconcile.DecodeText(data)
	if err != nil {
		return 0, false, &reconcile.ParseError{Platform: Platform, Msg: "summary: " + err.Error()}
	}
	var head reconcile.Header
	for i, line := range reconcile.Lines(text) {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		cells, err := reconcile.SplitCSV(line)
		if err != nil {
			return 0, false, &reconcile.ParseError{Platform: Platform, Line: i + 1, Msg: "summary: " + err.Error()}
		}
		if head == nil {
			head = reconcile.NewHeader(cells)
			continue
		}
		if reconcile.CleanCell(cells[0]) != "合计" {
			continue
		}
		fee, err := reconcile.ParseAmountOr0(head.Get(cells, billSumFee...))
		if err != nil {
			return 0, false, &reconcile.ParseError{Platform: Platform, Line: i + 1, Msg: "summary: 服务费: " + err.Error()}
		}
		return -fee, true, nil
	}
	return 0, false, nil
}
