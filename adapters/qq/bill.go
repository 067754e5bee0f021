package qq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/reconcile"
)

// pathStatement is QQ wallet's statement download (对账单下载).
const pathStatement = "/cgi-bin/sp_download/qpay_mch_statement_down.cgi"

// billDownloadTimeout bounds a statement download, which can be large.
const billDownloadTimeout = 60 * time.Second

// Statement failures (return_msg), as WeChat Pay v2's downloadbill, which
// QQ wallet's API mirrors, names them.
const (
	statementNoBill   = "No Bill Exist"
	statementCreating = "Bill Creating"
)

var _ reconcile.BillSource = (*Pay)(nil)

// DownloadBill downloads and parses the merchant's statement for date
// (reconcile.BillSource): a signed XML request (bill_type ALL) answered
// with the CSV itself, or with an XML failure. The statement is not signed,
// so it is trusted as far as the TLS connection to QQ wallet is. "Bill
// Creating" is a *reconcile.NotReadyError; "No Bill Exist" is an empty day
// once the statement is due, and not ready before.
func (p *Pay) DownloadBill(ctx context.Context, date reconcile.Date) (bill *reconcile.Bill, err error) {
	const api = "statement_down"
	start := time.Now()
	defer func() { adapters.Observe(PlatformQPay, api, start, err) }()
	req := map[string]string{
		"appid": p.appID, "mch_id": p.mchID, "nonce_str": nonce(),
		"bill_date": date.Compact(), "bill_type": "ALL",
	}
	req["sign"] = sign(req, p.apiKey)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+pathStatement, bytes.NewReader(encodeXML(req)))
	if err != nil {
		return nil, fmt.Errorf("qq: %s: %w", api, err)
	}
	hreq.Header.Set("Content-Type", "text/xml; charset=utf-8")
	hresp, err := newHTTPClient(billDownloadTimeout).Do(hreq)
	if err != nil {
		return nil, adapters.TransportError(PlatformQPay, api, err)
	}
	defer hresp.Body.Close()
	body, err := reconcile.ReadBill(hresp.Body)
	switch {
	case errors.Is(err, reconcile.ErrTooLarge):
		return nil, badResponse(api, "statement too large", err)
	case err != nil:
		return nil, adapters.TransportError(PlatformQPay, api, err)
	case hresp.StatusCode != http.StatusOK:
		return nil, statusError(PlatformQPay, api, hresp.StatusCode)
	}
	if body, err = reconcile.GunzipBill(body); err != nil {
		return nil, badResponse(api, "gzip", err)
	}
	if trimmed := bytes.TrimSpace(body); bytes.HasPrefix(trimmed, []byte("<xml>")) || bytes.HasPrefix(trimmed, []byte("<?xml")) {
		return p.statementFailure(api, date, trimmed)
	}
	if bill, err = ParseStatement(date, body); err != nil {
		return nil, badResponse(api, err.Error(), err)
	}
	return bill, nil
}

// statementFailure interprets an XML answer to a statement download.
func (p *Pay) statementFailure(api string, date reconcile.Date, body []byte) (*reconcile.Bill, error) {
	resp, err := decodeXML(body)
	if err != nil {
		return nil, badResponse(api, "undecodable XML answer", err)
	}
	msg := firstNonEmpty(resp["return_msg"], resp["retmsg"], resp["err_code_des"])
	switch {
	case strings.EqualFold(msg, statementCreating):
		return nil, reconcile.NewNotReady(PlatformQPay, date, p.now())
	case strings.EqualFold(msg, statementNoBill) && p.now().Before(date.ReadyAt()):
		return nil, reconcile.NewNotReady(PlatformQPay, date, p.now())
	case strings.EqualFold(msg, statementNoBill):
		return &reconcile.Bill{Platform: PlatformQPay, Date: date}, nil
	}
	reason := adapters.ReasonInvalidRequest
	if strings.Contains(strings.ToUpper(msg), "SIGN") {
		reason = adapters.ReasonAuth
	}
	return nil, &adapters.PlatformError{Platform: PlatformQPay, API: api, Reason: reason,
		Code: firstNonEmpty(resp["return_code"], "FAIL"), SubCode: resp["err_code"], Message: msg}
}

// QQ wallet statement columns.
const (
	stmtColTime          = "交易时间"
	stmtColOutTradeNo    = "商户订单号"
	stmtColTransactionID = "QQ钱包订单号"
	stmtColState         = "交易状态"
	stmtColAmount        = "订单金额"
	stmtColReceivable    = "商户应收金额"
	stmtColOutRefundNo   = "商户退款订单号"
	stmtColRefundID      = "QQ钱包退款订单号"
	stmtColRefund        = "退款金额"
	stmtColRefundTime    = "退款成功时间"
	stmtColFee           = "手续费金额"

	stmtSumCount   = "总交易单数"
	stmtSumAmount  = "总交易额"
	stmtSumRefunds = "总退款金额"
	stmtSumFees    = "手续费总金额"

	stmtStateRefund = "REFUND"
)

// statement is QQ wallet's statement layout.
var statement = reconcile.BacktickBill{
	Platform: PlatformQPay, Name: "statement",
	Required: []string{stmtColTime, stmtColOutTradeNo, stmtColState},
	Row:      parseStatementRow, Summary: parseStatementSummary,
}

// ParseStatement parses a QQ wallet statement (bill_type ALL): a header,
// detail rows of backtick-prefixed cells, then a summary header and one
// summary row. Columns are found by name; a BOM, CRLF and GBK text are
// accepted; an empty file is an empty day. Rows whose 交易状态 is REFUND
// are refunds, the others payments. Amounts are yuan, converted exactly.
func ParseStatement(date reconcile.Date, data []byte) (*reconcile.Bill, error) {
	return statement.Parse(date, data)
}

func parseStatementRow(h reconcile.Header, cells []string) (reconcile.Row, error) {
	r := reconcile.Row{
		Status: h.Get(cells, stmtColState), OutTradeNo: h.Get(cells, stmtColOutTradeNo),
		TransactionID: h.Get(cells, stmtColTransactionID),
	}
	if r.OutTradeNo == "" {
		return r, errors.New("no 商户订单号")
	}
	var err error
	if r.Fee, err = reconcile.ParseAmountOr0(h.Get(cells, stmtColFee)); err != nil {
		return r, fmt.Errorf("手续费金额: %w", err)
	}
	if r.Status == stmtStateRefund {
		r.Kind = reconcile.KindRefund
		r.OutRefundNo, r.RefundID = h.Get(cells, stmtColOutRefundNo), h.Get(cells, stmtColRefundID)
		if r.OutRefundNo == "" {
			return r, errors.New("refund row without 商户退款订单号")
		}
		if r.Amount, err = reconcile.ParseAmount(h.Get(cells, stmtColRefund)); err != nil {
			return r, fmt.Errorf("退款金额: %w", err)
		}
		r.Amount = reconcile.AbsFen(r.Amount)
		r.Settled = r.Amount
		at := h.Get(cells, stmtColRefundTime)
		if at == "" {
			at = h.Get(cells, stmtColTime)
		}
		r.Time, err = reconcile.ParseTime(at)
		return r, err
	}
	r.Kind = reconcile.KindPayment
	if r.Time, err = reconcile.ParseTime(h.Get(cells, stmtColTime)); err != nil {
		return r, err
	}
	if r.Amount, err = reconcile.ParseAmount(h.Get(cells, stmtColAmount)); err != nil {
		return r, fmt.Errorf("订单金额: %w", err)
	}
	r.Settled = r.Amount
	if v := h.Get(cells, stmtColReceivable); v != "" {
		if r.Settled, err = reconcile.ParseAmount(v); err != nil {
			return r, fmt.Errorf("商户应收金额: %w", err)
		}
	}
	return r, nil
}

func parseStatementSummary(h reconcile.Header, cells []string) (*reconcile.Summary, error) {
	var (
		s   reconcile.Summary
		err error
	)
	if s.Count, err = strconv.Atoi(h.Get(cells, stmtSumCount)); err != nil || s.Count < 0 {
		return nil, errors.New("总交易单数 is not a count")
	}
	if s.Amount, err = reconcile.ParseAmount(h.Get(cells, stmtSumAmount)); err != nil {
		return nil, fmt.Errorf("总交易额: %w", err)
	}
	if s.Refunds, err = reconcile.ParseAmountOr0(h.Get(cells, stmtSumRefunds)); err != nil {
		return nil, fmt.Errorf("总退款金额: %w", err)
	}
	if s.Fees, err = reconcile.ParseAmountOr0(h.Get(cells, stmtSumFees)); err != nil {
		return nil, fmt.Errorf("手续费总金额: %w", err)
	}
	s.Refunds = reconcile.AbsFen(s.Refunds)
	return &s, nil
}
