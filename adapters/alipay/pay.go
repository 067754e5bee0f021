package alipay

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"time"

	"github.com/smartwalle/alipay/v3"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/money"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/webhooks"
)

// productCode is the sales product of mini-program payments (my.tradePay).
const productCode = "JSAPI_PAY"

// refundSuccess is fastpay.refund.query's refund_status for a refund whose
// money moved; Alipay documents no other value.
const refundSuccess = "REFUND_SUCCESS"

// userIDRE matches an Alipay user_id (2088 and 12 more digits).
var userIDRE = regexp.MustCompile(`^2088[0-9]{12}$`)

// Pay is an Alipay app's payment channel (orders.Payments).
//
// States: WAIT_BUYER_PAY → pending; TRADE_SUCCESS and TRADE_FINISHED →
// paid; TRADE_CLOSED → closed, unless the trade had been paid (query:
// send_pay_date present; Alipay closes a trade refunded in full), which is
// refunded.
//
// Refunds: Alipay answers alipay.trade.refund with fund_change "Y" when
// this request moved money, and "N" when it did not — also for a repeat of
// an out_request_no that already refunded. So "Y" is succeeded, and
// anything else is confirmed at once with fastpay.refund.query
// (REFUND_SUCCESS → succeeded, otherwise pending).
type Pay struct {
	core
	sellerID string
}

var (
	_ orders.Payments             = (*Pay)(nil)
	_ orders.PaymentNotifications = (*Pay)(nil)
)

// NewPay returns app's Alipay payment channel. pay.seller_id, when
// configured, must be the seller_id of every notification.
func NewPay(app *config.App, opts adapters.Options) (*Pay, error) {
	c, err := newCore(app, opts)
	if err != nil {
		return nil, err
	}
	p := &Pay{core: c}
	if app.Pay != nil {
		p.sellerID = app.Pay.SellerID
	}
	return p, nil
}

// Prepay creates the trade (alipay.trade.create); its trade_no is what
// my.tradePay takes. The payer is buyer_id when the Alipay user_id is known
// (or OpenID is one), else buyer_open_id. The attach string travels as
// passback_params and comes back in notifications.
func (p *Pay) Prepay(ctx context.Context, req orders.PrepayRequest) (pre orders.Prepay, err error) {
	const api = "alipay.trade.create"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	param := alipay.TradeCreate{}
	switch {
	case req.Payer.AlipayUserID != "":
		param.BuyerId = req.Payer.AlipayUserID
	case userIDRE.MatchString(req.Payer.OpenID):
		param.BuyerId = req.Payer.OpenID
	case req.Payer.OpenID != "":
		param.BuyerOpenId = req.Payer.OpenID
	default:
		return pre, &adapters.PlatformError{Platform: Platform, API: api, Reason: adapters.ReasonInvalidRequest, Message: "no buyer: an Alipay user_id or open_id is required"}
	}
	param.NotifyURL = req.NotifyURL
	param.OutTradeNo = req.OutTradeNo
	param.TotalAmount = money.FormatYuan(req.Amount)
	param.Subject = req.Description
	param.ProductCode = productCode
	if !req.ExpiresAt.IsZero() {
		param.TimeExpire = req.ExpiresAt.In(shanghai).Format(timeLayout)
	}
	if req.Attach != "" {
		// Alipay wants passback_params URL-encoded and returns them as sent.
		param.PassbackParams = url.QueryEscape(req.Attach)
	}
	var rsp *alipay.TradeCreateRsp
	err = guard(func() (err error) { rsp, err = p.sdk.TradeCreate(ctx, param); return err })
	if err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false); err != nil {
		return pre, err
	}
	if rsp.TradeNo == "" {
		return pre, badResponse(api, "no trade_no in the answer", nil)
	}
	return orders.Prepay{PrepayID: rsp.TradeNo}, nil
}

// PayParams returns what my.tradePay takes: {"tradeNO": trade_no}. Alipay
// needs no client-side signature.
func (p *Pay) PayParams(_ context.Context, pre orders.Prepay) (orders.PayParams, error) {
	if pre.PrepayID == "" {
		return nil, errors.New("alipay: pay params: no trade_no")
	}
	return orders.PayParams{"tradeNO": pre.PrepayID}, nil
}

// Query returns Alipay's view of the trade (alipay.trade.query). The
// answer names no app or seller; the trade is this app's by construction.
func (p *Pay) Query(ctx context.Context, outTradeNo string) (tx orders.Transaction, err error) {
	const api = "alipay.trade.query"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	var rsp *alipay.TradeQueryRsp
	err = guard(func() (err error) {
		rsp, err = p.sdk.TradeQuery(ctx, alipay.TradeQuery{OutTradeNo: outTradeNo})
		return err
	})
	if err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false); err != nil {
		return tx, err
	}
	tx = orders.Transaction{
		AppID: p.appID, OutTradeNo: rsp.OutTradeNo, TransactionID: rsp.TradeNo,
		Currency: "CNY", PayerID: rsp.BuyerOpenId,
	}
	if tx.PayerID == "" {
		tx.PayerID = rsp.BuyerUserId
	}
	if tx.Amount, err = money.ParseYuan(rsp.TotalAmount); err != nil {
		return tx, badResponse(api, "total_amount", err)
	}
	if rsp.SendPayDate != "" {
		if tx.PaidAt, err = time.ParseInLocation(timeLayout, rsp.SendPayDate, shanghai); err != nil {
			return tx, badResponse(api, "send_pay_date", err)
		}
	}
	switch rsp.TradeStatus {
	case alipay.TradeStatusWaitBuyerPay:
		tx.State = orders.PaymentPending
	case alipay.TradeStatusSuccess, alipay.TradeStatusFinished:
		tx.State = orders.PaymentPaid
	case alipay.TradeStatusClosed:
		tx.State = orders.PaymentClosed
		if rsp.SendPayDate != "" {
			tx.State = orders.PaymentRefunded
		}
	default:
		return tx, badResponse(api, "unknown trade_status "+string(rsp.TradeStatus), nil)
	}
	return tx, nil
}

// Close closes an unpaid trade (alipay.trade.close). A trade Alipay already
// closed (ACQ.TRADE_HAS_CLOSE) is the goal reached, not an error; a paid
// one is a conflict (ACQ.TRADE_STATUS_ERROR).
func (p *Pay) Close(ctx context.Context, outTradeNo string) (err error) {
	const api = "alipay.trade.close"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	var rsp *alipay.TradeCloseRsp
	err = guard(func() (err error) {
		rsp, err = p.sdk.TradeClose(ctx, alipay.TradeClose{OutTradeNo: outTradeNo})
		return err
	})
	err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false)
	if pe, ok := adapters.AsPlatformError(err); ok && pe.SubCode == "ACQ.TRADE_HAS_CLOSE" {
		return nil
	}
	return err
}

// Refund requests a refund (alipay.trade.refund, out_request_no =
// OutRefundNo, so a repeat refunds at most once). fund_change "Y" is
// success; otherwise the refund query decides (see Pay). A failed
// confirming query leaves the refund pending rather than failing a
// request Alipay accepted.
func (p *Pay) Refund(ctx context.Context, req orders.RefundRequest) (orders.Refund, error) {
	ref, err := p.refund(ctx, req)
	if err != nil || ref.State == orders.RefundSucceeded {
		return ref, err
	}
	confirmed, qerr := p.QueryRefund(ctx, req.OutTradeNo, req.OutRefundNo)
	if qerr != nil || confirmed.State != orders.RefundSucceeded {
		return ref, nil
	}
	return confirmed, nil
}

func (p *Pay) refund(ctx context.Context, req orders.RefundRequest) (ref orders.Refund, err error) {
	const api = "alipay.trade.refund"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	param := alipay.TradeRefund{
		OutTradeNo: req.OutTradeNo, RefundAmount: money.FormatYuan(req.Amount),
		OutRequestNo: req.OutRefundNo, RefundReason: req.Reason,
	}
	var rsp *alipay.TradeRefundRsp
	err = guard(func() (err error) { rsp, err = p.sdk.TradeRefund(ctx, param); return err })
	if err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false); err != nil {
		return ref, err
	}
	ref = orders.Refund{
		OutTradeNo: req.OutTradeNo, TransactionID: rsp.TradeNo, OutRefundNo: req.OutRefundNo,
		State: orders.RefundPending, Amount: req.Amount, Total: req.Total,
	}
	if rsp.FundChange == "Y" {
		ref.State, ref.SucceededAt = orders.RefundSucceeded, p.now()
	}
	return ref, nil
}

// QueryRefund returns a refund's state (alipay.trade.fastpay.refund.query):
// REFUND_SUCCESS is succeeded; no refund_status means Alipay has not
// refunded (not received, or failed — it does not say which), which is
// pending: repeating the refund with the same out_request_no is safe.
func (p *Pay) QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (ref orders.Refund, err error) {
	const api = "alipay.trade.fastpay.refund.query"
	start := time.Now()
	defer func() { adapters.Observe(Platform, api, start, err) }()
	param := alipay.TradeFastPayRefundQuery{OutTradeNo: outTradeNo, OutRequestNo: outRefundNo}
	var rsp *alipay.TradeFastPayRefundQueryRsp
	err = guard(func() (err error) { rsp, err = p.sdk.TradeFastPayRefundQuery(ctx, param); return err })
	if err = check(api, err, envelopeOf(rsp != nil, func() *alipay.Error { return &rsp.Error }), false); err != nil {
		return ref, err
	}
	ref = orders.Refund{OutTradeNo: outTradeNo, TransactionID: rsp.TradeNo, OutRefundNo: outRefundNo, State: orders.RefundPending}
	if rsp.RefundStatus != refundSuccess {
		return ref, nil
	}
	ref.State = orders.RefundSucceeded
	if ref.Amount, err = money.ParseYuan(rsp.RefundAmount); err != nil {
		return ref, badResponse(api, "refund_amount", err)
	}
	if rsp.TotalAmount != "" {
		if ref.Total, err = money.ParseYuan(rsp.TotalAmount); err != nil {
			return ref, badResponse(api, "total_amount", err)
		}
	}
	if rsp.GMTRefundPay != "" {
		if ref.SucceededAt, err = parseTime(rsp.GMTRefundPay); err != nil {
			return ref, badResponse(api, "gmt_refund_pay", err)
		}
	}
	return ref, nil
}

// parseTime reads Alipay's "yyyy-MM-dd HH:mm:ss", with optional
// milliseconds (gmt_refund), in Asia/Shanghai.
func parseTime(s string) (time.Time, error) {
	if len(s) > len(timeLayout) {
		return time.ParseInLocation(timeLayout+".000", s, shanghai)
	}
	return time.ParseInLocation(timeLayout, s, shanghai)
}

// NotifyAck is the reply Alipay counts as received: 200 and exactly
// "success".
func (p *Pay) NotifyAck() webhooks.Reply {
	return webhooks.Reply{Status: 200, ContentType: "text/plain; charset=utf-8", Body: []byte("success")}
}

// NotifyNack asks Alipay to retry: anything but "success" does; message is
// not sent (Alipay does not read it).
func (p *Pay) NotifyNack(string) webhooks.Reply {
	return webhooks.Reply{Status: 500, ContentType: "text/plain; charset=utf-8", Body: []byte("fail")}
}
