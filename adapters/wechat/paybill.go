package wechat

import (
	"context"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/reconcile"
)

// Trade bill error codes (申请交易账单): the day had no trades, or the bill
// is still being generated.
const (
	payNoStatement       = "NO_STATEMENT_EXIST"
	payStatementCreating = "STATEMENT_CREATING"
)

var _ reconcile.BillSource = (*Pay)(nil)

// payBillInfo is the answer of GET /v3/bill/tradebill.
type payBillInfo struct {
	HashType    string `json:"hash_type"`
	HashValue   string `json:"hash_value"`
	DownloadURL string `json:"download_url"`
}

// DownloadBill downloads and parses the merchant's trade bill for date
// (reconcile.BillSource), in two steps: GET /v3/bill/tradebill (a signed
// request whose signed answer names the file and its SHA1), then a signed
// GET of download_url, whose answer WeChat Pay does not sign; the SHA1 of
// the (decompressed) file must match instead. The file is asked for
// gzipped.
//
// STATEMENT_CREATING is a *reconcile.NotReadyError. NO_STATEMENT_EXIST
// means the day had no trades once the bill is due (an empty bill), and a
// bill not generated yet before that.
func (p *Pay) DownloadBill(ctx context.Context, date reconcile.Date) (bill *reconcile.Bill, err error) {
	const api = "tradebill"
	defer payObserve(api, time.Now(), &err)
	q := url.Values{"bill_date": {date.String()}, "bill_type": {"ALL"}, "tar_type": {"GZIP"}}
	res, err := p.client.Get(ctx, consts.WechatPayAPIServer+"/v3/bill/tradebill?"+q.Encode())
	if err != nil {
		var apiErr *core.APIError
		if errors.As(err, &apiErr) {
			switch {
			case apiErr.Code == payStatementCreating:
				return nil, reconcile.NewNotReady(PayPlatform, date, p.now())
			case apiErr.Code == payNoStatement && p.now().Before(date.ReadyAt()):
				return nil, reconcile.NewNotReady(PayPlatform, date, p.now())
			case apiErr.Code == payNoStatement:
				return &reconcile.Bill{Platform: PayPlatform, Date: date}, nil
			}
		}
		return nil, payError(api, err)
	}
	var info payBillInfo
	err = core.UnMarshalResponse(res.Response, &info)
	if err != nil {
		return nil, payBadResponse(api, "undecodable tradebill answer: "+err.Error())
	}
	if !strings.EqualFold(info.HashType, "SHA1") || info.DownloadURL == "" {
		return nil, payBadResponse(api, fmt.Sprintf("tradebill answer without a SHA1 download (hash_type %q)", info.HashType))
	}
	raw, err := p.downloadBillFile(ctx, info.DownloadURL)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(raw)
	if subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(strings.ToLower(info.HashValue))) != 1 {
		return nil, payBadResponse("billdownload", "the bill's SHA1 does not match the tradebill answer's hash_value")
	}
	bill, err = ParseTradeBill(date, raw)
	if err != nil {
		return nil, payBadResponse("billdownload", err.Error())
	}
	return bill, nil
}

// downloadBillFile fetches the bill with a signed GET whose answer is not
// verified (WeChat Pay does not sign it), and returns it decompressed.
func (p *Pay) downloadBillFile(ctx context.Context, u string) ([]byte, error) {
	const api = "billdownload"
	dl := core.NewClientWithValidator(p.client, &validators.NullValidator{})
	res, err := dl.Get(ctx, u)
	if err != nil {
		// The link's token is a credential: keep it out of errors and logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			if parsed, perr := url.Parse(ue.URL); perr == nil {
				parsed.RawQuery = ""
				ue.URL = parsed.String()
			}
		}
		return nil, payError(api, err)
	}
	defer res.Response.Body.Close()
	raw, err := reconcile.ReadBill(res.Response.Body)
	if err != nil {
		return nil, adapters.TransportError(PayPlatform, api, err)
	}
	if raw, err = reconcile.GunzipBill(raw); err != nil {
		return nil, payBadResponse(api, "gzip: "+err.Error())
	}
	return raw, nil
}

// WeChat Pay trade bill columns (v3; v2's older names as fallbacks).
const (
	billColTime          = "交易时间"
	billColTransactionID = "微信订单号"
	billColOutTradeNo    = "商户订单号"
	billColState         = "交易状态"
	billColSettled       = "应结订单金额"
	billColTotalV2       = "总金额"
	billColRefundID      = "微信退款单号"
	billColOutRefundNo   = "商户退款单号"
	billColRefund        = "退款金额"
	billColFee           = "手续费"
	billColOrderAmount   = "订单金额"
	billColRefundApplied = "申请退款金额"

	billSumCount   = "总交易单数"
	billSumAmount  = "应结订单总金额"
	billSumAmount2 = "总交易额"
	billSumRefunds = "退款总金额"
	billSumRefund2 = "总退款金额"
	billSumFees    = "手续费总金额"

	billStateRefund = "REFUND"
)

// tradeBill is WeChat Pay's trade bill layout.
var tradeBill = reconcile.BacktickBill{
	Platform: PayPlatform, Name: "trade bill",
	Required: []string{billColTime, billColOutTradeNo, billColState},
	Row:      parseBillRow, Summary: parseBillSummary,
}

// ParseTradeBill parses a WeChat Pay trade bill (bill_type ALL): a header
// row, detail rows whose every cell starts with a backtick, then a summary
// header and one summary row. Columns are found by name, so bills of older
// layouts (WeChat Pay v2's 总金额 instead of 应结订单金额, no 订单金额) parse
// too. A BOM, CRLF line ends and GBK text are accepted; an empty file is an
// empty day. Rows whose 交易状态 is REFUND are refunds; the others are
// payments. Amounts are yuan, converted to fen exactly.
func ParseTradeBill(date reconcile.Date, data []byte) (*reconcile.Bill, error) {
	return tradeBill.Parse(date, data)
}

func parseBillRow(h reconcile.Header, cells []string) (reconcile.Row, error) {
	var (
		r   reconcile.Row
		err error
	)
	r.Status = h.Get(cells, billColState)
	r.OutTradeNo = h.Get(cells, billColOutTradeNo)
	r.TransactionID = h.Get(cells, billColTransactionID)
	if r.OutTradeNo == "" {
		return r, errors.New("no 商户订单号")
	}
	if r.Time, err = reconcile.ParseTime(h.Get(cells, billColTime)); err != nil {
		return r, err
	}
	if r.Fee, err = reconcile.ParseAmountOr0(h.Get(cells, billColFee)); err != nil {
		return r, fmt.Errorf("手续费: %w", err)
	}
	if r.Status == billStateRefund {
		r.Kind = reconcile.KindRefund
		r.OutRefundNo, r.RefundID = h.Get(cells, billColOutRefundNo), h.Get(cells, billColRefundID)
		if r.OutRefundNo == "" {
			return r, errors.New("refund row without 商户退款单号")
		}
		if r.Settled, err = reconcile.ParseAmount(h.Get(cells, billColRefund)); err != nil {
			return r, fmt.Errorf("退款金额: %w", err)
		}
		r.Amount = r.Settled
		if v := h.Get(cells, billColRefundApplied); v != "" {
			if r.Amount, err = reconcile.ParseAmount(v); err != nil {
				return r, fmt.Errorf("申请退款金额: %w", err)
			}
		}
		r.Settled, r.Amount = reconcile.AbsFen(r.Settled), reconcile.AbsFen(r.Amount)
		return r, nil
	}
	r.Kind = reconcile.KindPayment
	if r.Settled, err = reconcile.ParseAmount(h.Get(cells, billColSettled, billColTotalV2)); err != nil {
		return r, fmt.Errorf("应结订单金额: %w", err)
	}
	r.Amount = r.Settled
	if v := h.Get(cells, billColOrderAmount); v != "" {
		if r.Amount, err = reconcile.ParseAmount(v); err != nil {
			return r, fmt.Errorf("订单金额: %w", err)
		}
	}
	return r, nil
}

// parseBillSummary reads the summary row.
func parseBillSummary(h reconcile.Header, cells []string) (*reconcile.Summary, error) {
	var (
		s   reconcile.Summary
		err error
	)
	if s.Count, err = strconv.Atoi(h.Get(cells, billSumCount)); err != nil || s.Count < 0 {
		return nil, errors.New("总交易单数 is not a count")
	}
	if s.Amount, err = reconcile.ParseAmount(h.Get(cells, billSumAmount, billSumAmount2)); err != nil {
		return nil, fmt.Errorf("应结订单总金额: %w", err)
	}
	if s.Refunds, err = reconcile.ParseAmountOr0(h.Get(cells, billSumRefunds, billSumRefund2)); err != nil {
		return nil, fmt.Errorf("退款总金额: %w", err)
	}
	if s.Fees, err = reconcile.ParseAmountOr0(h.Get(cells, billSumFees)); err != nil {
		return nil, fmt.Errorf("手续费总金额: %w", err)
	}
	s.Refunds = reconcile.AbsFen(s.Refunds)
	return &s, nil
}
