package wechat

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/reconcile"
)

// maxXPayBill bounds a downloaded virtual payment bill.
const maxXPayBill = 64 << 20

var _ reconcile.BillSource = (*XPay)(nil)

// DownloadBill downloads and parses the virtual payment bill for date
// (reconcile.BillSource): POST /xpay/download_bill {begin_ds, end_ds}
// names a download url (268490011 while the bill is being generated: a
// *reconcile.NotReadyError), then the file is fetched from it. The
// request has no env and is signed with the production AppKey; an app
// configured with the sandbox AppKey only has no bills.
//
// The file's layout is not publicly documented: minigate reads a CSV with
// a header row by column name (see xpayBillColumns) and fails with a
// *reconcile.ParseError naming the line on anything else. Amounts are fen
// (silenceper: 账单中金额相关字段是以分为单位).
func (x *XPay) DownloadBill(ctx context.Context, date reconcile.Date) (*reconcile.Bill, error) {
	const api = "download_bill"
	if x.prodKey == "" {
		return nil, &adapters.UnsupportedError{Platform: XPayPlatform, Feature: "bills without the production app_key"}
	}
	body := struct {
		BeginDs string `json:"begin_ds"`
		EndDs   string `json:"end_ds"`
	}{date.Compact(), date.Compact()}
	var ans struct {
		errAnswer
		URL string `json:"url"`
	}
	err := x.call(ctx, api, x.prodKey, body, "", &ans)
	if pe, ok := adapters.AsPlatformError(err); ok && pe.Code == strconv.Itoa(xpayErrBillPending) {
		return nil, reconcile.NewNotReady(XPayPlatform, date, x.now())
	}
	if err == nil && ans.URL == "" {
		err = x.api.badResponse(api, "no url in the answer")
	}
	if err != nil {
		return nil, fmt.Errorf("wechat: xpay bill: %w", err)
	}
	raw, err := x.fetchBill(ctx, ans.URL)
	if err != nil {
		return nil, fmt.Errorf("wechat: xpay bill: %w", err)
	}
	return ParseXPayBill(raw, date)
}

// fetchBill downloads the bill file (GET url, at most maxXPayBill bytes).
func (x *XPay) fetchBill(ctx context.Context, rawURL string) ([]byte, error) {
	const api = "download_bill_file"
	start := time.Now()
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, x.api.observed(api, start, x.api.badResponse(api, "the bill url is not an http(s) URL"))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, x.api.observed(api, start, x.api.badResponse(api, "the bill url is unusable"))
	}
	resp, err := x.api.HTTP.Do(req)
	if err != nil {
		return nil, x.api.observed(api, start, adapters.TransportError(XPayPlatform, api, redactTransportError(err)))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxXPayBill+1))
	switch {
	case err != nil:
		err = adapters.TransportError(XPayPlatform, api, err)
	case resp.StatusCode != http.StatusOK:
		err = x.api.statusError(api, resp.StatusCode)
	case len(raw) > maxXPayBill:
		err = x.api.badResponse(api, fmt.Sprintf("bill larger than %d bytes", maxXPayBill))
	}
	return raw, x.api.observed(api, start, err)
}

// xpayBillColumns are the columns minigate reads (the file may have more).
var xpayBillColumns = struct {
	time, kind, outTradeNo, wxOrderID, outRefundNo, wxRefundID, amount, refund, fee string
}{"交易时间", "交易类型", "商户订单号", "微信订单号", "商户退款单号", "微信退款单号", "订单金额", "退款金额", "技术服务费"}

// ParseXPayBill reads a virtual payment bill file for date.
func ParseXPayBill(raw []byte, date reconcile.Date) (*reconcile.Bill, error) {
	bill := &reconcile.Bill{Platform: XPayPlatform, Date: date}
	fail := func(line int, format string, args ...any) error {
		return &reconcile.ParseError{Platform: XPayPlatform, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	raw = bytes.TrimPrefix(raw, []byte("\ufeff"))
	if len(bytes.TrimSpace(raw)) == 0 {
		return bill, nil
	}
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fail(1, "header: %v", err)
	}
	h := reconcile.NewHeader(header)
	c := xpayBillColumns
	if !h.Has(c.time, c.kind, c.outTradeNo, c.amount) {
		return nil, fail(1, "the header lacks %s, %s, %s or %s", c.time, c.kind, c.outTradeNo, c.amount)
	}
	fen := func(line int, s string) (int64, error) {
		if s == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fail(line, "%q is not an amount in fen", s)
		}
		return n, nil
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			line := 0
			if errors.As(err, &pe) {
				line = pe.Line
			}
			return nil, fail(line, "%v", err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		at, err := time.ParseInLocation(time.DateTime, h.Get(rec, c.time), reconcile.Zone)
		if err != nil {
			return nil, fail(line, "%s %q is not yyyy-mm-dd hh:mm:ss", c.time, h.Get(rec, c.time))
		}
		row := reconcile.Row{OutTradeNo: h.Get(rec, c.outTradeNo), TransactionID: h.Get(rec, c.wxOrderID), Time: at}
		if row.OutTradeNo == "" {
			return nil, fail(line, "no %s", c.outTradeNo)
		}
		fee, err := fen(line, h.Get(rec, c.fee))
		if err != nil {
			return nil, err
		}
		row.Fee = fee
		switch kind := h.Get(rec, c.kind); kind {
		case "支付":
			row.Kind, row.Status = reconcile.KindPayment, kind
			if row.Amount, err = fen(line, h.Get(rec, c.amount)); err != nil {
				return nil, err
			}
		case "退款":
			row.Kind, row.Status = reconcile.KindRefund, kind
			row.OutRefundNo, row.RefundID = h.Get(rec, c.outRefundNo), h.Get(rec, c.wxRefundID)
			if row.Amount, err = fen(line, h.Get(rec, c.refund)); err != nil {
				return nil, err
			}
			if row.OutRefundNo == "" {
				return nil, fail(line, "a refund without %s", c.outRefundNo)
			}
		default:
			return nil, fail(line, "unknown %s %q", c.kind, kind)
		}
		if row.Amount <= 0 {
			return nil, fail(line, "amount %d is not positive", row.Amount)
		}
		row.Settled = row.Amount
		bill.Rows = append(bill.Rows, row)
	}
	return bill, nil
}
