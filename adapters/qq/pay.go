package qq

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/orders"
)

// QQ wallet paths below the configured endpoint.
const (
	pathUnifiedOrder = "/cgi-bin/pay/qpay_unified_order.cgi"
	pathOrderQuery   = "/cgi-bin/pay/qpay_order_query.cgi"
	pathCloseOrder   = "/cgi-bin/pay/qpay_close_order.cgi"
	pathRefund       = "/cgi-bin/pay/qpay_refund.cgi"
	pathRefundQuery  = "/cgi-bin/pay/qpay_refund_query.cgi"
)

// realRefundBase is where the real QQ wallet serves refunds (with the
// merchant's client certificate).
const realRefundBase = "https://api.qpay.qq.com"

// TradeType is the trade_type minigate sends: go-pay/gopay's QQ client
// names MINIAPP as "QQ小程序支付"; some integrations send JSAPI instead.
const TradeType = "MINIAPP"

// Field limits of the unified order, in bytes.
const (
	maxBody       = 128
	maxAttach     = 128
	maxOutTradeNo = 32
	maxClientIP   = 16
)

// fallbackClientIP is sent when the payer's IP is unknown or does not fit
// spbill_create_ip (String(16), so IPv4 only).
const fallbackClientIP = "127.0.0.1"

// shanghai is Beijing time, in which QQ wallet writes and reads times.
// China has no daylight saving time, so a fixed zone is exact.
var shanghai = time.FixedZone("Asia/Shanghai", 8*60*60)

// timeLayout is QQ wallet's yyyyMMddHHmmss.
const timeLayout = "20060102150405"

// Pay is the QQ wallet merchant of one app; it implements orders.Payments.
type Pay struct {
	appID        string
	mchID        string
	apiKey       string
	opUserID     string
	opUserPasswd string // MD5 of the operator password, lowercase hex
	base         string
	refundBase   string
	http         *http.Client
	refundHTTP   *http.Client
	now          func() time.Time
}

var (
	_ orders.Payments             = (*Pay)(nil)
	_ orders.PaymentNotifications = (*Pay)(nil)
)

// NewPay returns the QQ wallet client for app. The app's pay section needs
// mch_id and api_key; refunds at the real QQ wallet also need the merchant
// client certificate (cert_file, key_file) and an operator (op_user_id,
// default mch_id, and op_user_passwd, the operator's password, sent as its
// MD5). Without a certificate refunds go out without client authentication,
// as the sandbox accepts.
func NewPay(app *config.App, opts adapters.Options) (*Pay, error) {
	if app == nil || app.Pay == nil || app.Pay.MchID == "" || app.Pay.APIKey == "" {
		return nil, errors.New("qq: pay.mch_id and pay.api_key are required for QQ wallet")
	}
	p := app.Pay
	base := endpoint(opts.Endpoints.QPayAPI, config.DefaultQPayAPI)
	refundBase := base
	if base == config.DefaultQPayAPI {
		refundBase = realRefundBase
	}
	pay := &Pay{
		appID: app.AppID, mchID: p.MchID, apiKey: p.APIKey,
		base: base, refundBase: refundBase,
		http: newHTTPClient(opts.Timeout), refundHTTP: newHTTPClient(opts.Timeout),
		now: opts.Clock(),
	}
	if p.OpUserPasswd != "" {
		pay.opUserID = p.OpUserID
		if pay.opUserID == "" {
			pay.opUserID = p.MchID
		}
		sum := md5.Sum([]byte(p.OpUserPasswd))
		pay.opUserPasswd = hex.EncodeToString(sum[:])
	}
	if p.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("qq: pay.cert_file/pay.key_file: %w", err)
		}
		tr, ok := pay.refundHTTP.Transport.(*http.Transport)
		if !ok {
			return nil, errors.New("qq: refund client has no *http.Transport for the client certificate")
		}
		tr.TLSClientConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return pay, nil
}

// Prepay creates the order at QQ wallet (qpay_unified_order.cgi) and
// returns its prepay_id. body is cut to 128 bytes on a character boundary;
// an attach or out_trade_no too long for QQ is refused before any call.
func (p *Pay) Prepay(ctx context.Context, req orders.PrepayRequest) (_ orders.Prepay, err error) {
	const api = "unified_order"
	if err := checkPrepay(req); err != nil {
		return orders.Prepay{}, err
	}
	start := time.Now()
	defer func() { adapters.Observe(PlatformQPay, api, start, err) }()
	now := p.now().In(shanghai)
	fields := map[string]string{
		"body":             truncateUTF8(req.Description, maxBody),
		"attach":           req.Attach,
		"out_trade_no":     req.OutTradeNo,
		"fee_type":         "CNY",
		"total_fee":        strconv.FormatInt(req.Amount, 10),
		"spbill_create_ip": clientIP(req.ClientIP),
		"time_start":       now.Format(timeLayout),
		"trade_type":       TradeType,
		"notify_url":       req.NotifyURL,
	}
	if !req.ExpiresAt.IsZero() {
		fields["time_expire"] = req.ExpiresAt.In(shanghai).Format(timeLayout)
	}
	resp, err := p.call(ctx, api, p.http, p.base+pathUnifiedOrder, fields)
	if err != nil {
		return orders.Prepay{}, err
	}
	if resp["prepay_id"] == "" {
		return orders.Prepay{}, badResponse(api, "response without prepay_id", nil)
	}
	return orders.Prepay{PrepayID: resp["prepay_id"]}, nil
}

// checkPrepay refuses, before any call, what QQ would refuse.
func checkPrepay(req orders.PrepayRequest) error {
	bad := func(msg string) error {
		return &adapters.PlatformError{Platform: PlatformQPay, API: "unified_order",
			Reason: adapters.ReasonInvalidRequest, Message: msg}
	}
	switch {
	case req.OutTradeNo == "" || len(req.OutTradeNo) > maxOutTradeNo:
		return bad(fmt.Sprintf("out_trade_no must be 1 to %d bytes", maxOutTradeNo))
	case len(req.Attach) > maxAttach:
		return bad(fmt.Sprintf("attach must be at most %d bytes", maxAttach))
	case req.Amount <= 0:
		return bad("amount must be positive")
	case req.Description == "":
		return bad("description is required")
	case req.NotifyURL == "":
		return bad("notify_url is required")
	}
	return nil
}

// PayParams returns what qq.requestPayment takes: the prepay_id as
// package and the merchant id as bargainor_id. No client-side signature is
// involved.
func (p *Pay) PayParams(_ context.Context, pp orders.Prepay) (orders.PayParams, error) {
	if pp.PrepayID == "" {
		return nil, errors.New("qq: pay params: empty prepay_id")
	}
	return orders.PayParams{"package": "prepay_id=" + pp.PrepayID, "bargainor_id": p.mchID}, nil
}

// Query returns QQ wallet's view of an order (qpay_order_query.cgi).
func (p *Pay) Query(ctx context.Context, outTradeNo string) (_ orders.Transaction, err error) {
	const api = "order_query"
	start := time.Now()
	defer func() { adapters.Observe(PlatformQPay, api, start, err) }()
	resp, err := p.call(ctx, api, p.http, p.base+pathOrderQuery, map[string]string{"out_trade_no": outTradeNo})
	if err != nil {
		return orders.Transaction{}, err
	}
	tx, err := p.transaction(resp)
	if err != nil {
		return orders.Transaction{}, badResponse(api, err.Error(), nil)
	}
	if tx.OutTradeNo != outTradeNo {
		return orders.Transaction{}, badResponse(api, "response for another out_trade_no", nil)
	}
	return tx, nil
}

// Close closes an unpaid order (qpay_close_order.cgi). QQ's close takes the
// order total, so Close queries the order first; that query also answers
// the common cases without a close call: an order already closed is done,
// a paid one is a conflict. Closing an order QQ already closed succeeds.
func (p *Pay) Close(ctx context.Context, outTradeNo string) error {
	const api = "close_order"
	tx, err := p.Query(ctx, outTradeNo)
	if err != nil {
		return err
	}
	switch tx.State {
	case orders.PaymentClosed:
		return nil
	case orders.PaymentPaid, orders.PaymentRefunded:
		return &adapters.PlatformError{Platform: PlatformQPay, API: api, Reason: adapters.ReasonConflict,
			Code: "ORDERPAID", Message: "the order is already paid"}
	}
	start := time.Now()
	_, err = p.call(ctx, api, p.http, p.base+pathCloseOrder, map[string]string{
		"out_trade_no": outTradeNo,
		"total_fee":    strconv.FormatInt(tx.Amount, 10),
	})
	if pe, ok := adapters.AsPlatformError(err); ok && pe.Code == "ORDERCLOSED" {
		err = nil
	}
	adapters.Observe(PlatformQPay, api, start, err)
	return err
}

// Refund requests a refund (qpay_refund.cgi). QQ answers before the money
// moves, so the refund comes back pending; QueryRefund reports the outcome.
// The same OutRefundNo refunds at most once at QQ.
func (p *Pay) Refund(ctx context.Context, req orders.RefundRequest) (_ orders.Refund, err error) {
	const api = "refund"
	if req.OutRefundNo == "" || len(req.OutRefundNo) > maxOutTradeNo || req.Amount <= 0 {
		return orders.Refund{}, &adapters.PlatformError{Platform: PlatformQPay, API: api,
			Reason: adapters.ReasonInvalidRequest, Message: "out_refund_no (1 to 32 bytes) and a positive amount are required"}
	}
	start := time.Now()
	defer func() { adapters.Observe(PlatformQPay, api, start, err) }()
	fields := map[string]string{
		"out_trade_no":   req.OutTradeNo,
		"transaction_id": req.TransactionID,
		"out_refund_no":  req.OutRefundNo,
		"refund_fee":     strconv.FormatInt(req.Amount, 10),
		"op_user_id":     p.opUserID,
		"op_user_passwd": p.opUserPasswd,
	}
	resp, err := p.call(ctx, api, p.refundHTTP, p.refundBase+pathRefund, fields)
	if err != nil {
		return orders.Refund{}, err
	}
	if got := resp["out_refund_no"]; got != "" && got != req.OutRefundNo {
		return orders.Refund{}, badResponse(api, "response for another out_refund_no", nil)
	}
	r := orders.Refund{
		OutTradeNo:    req.OutTradeNo,
		TransactionID: firstNonEmpty(resp["transaction_id"], req.TransactionID),
		OutRefundNo:   req.OutRefundNo,
		RefundID:      resp["refund_id"],
		State:         orders.RefundPending,
		Amount:        req.Amount,
		Total:         req.Total,
	}
	if v := resp["refund_fee"]; v != "" {
		if r.Amount, err = parseFen(v); err != nil {
			return orders.Refund{}, badResponse(api, "refund_fee: "+err.Error(), nil)
		}
	}
	if v := resp["total_fee"]; v != "" {
		if r.Total, err = parseFen(v); err != nil {
			return orders.Refund{}, badResponse(api, "total_fee: "+err.Error(), nil)
		}
	}
	return r, nil
}

// QueryRefund returns a refund's state (qpay_refund_query.cgi).
func (p *Pay) QueryRefund(ctx context.Context, outTradeNo, outRefundNo string) (_ orders.Refund, err error) {
	const api = "refund_query"
	start := time.Now()
	defer func() { adapters.Observe(PlatformQPay, api, start, err) }()
	resp, err := p.call(ctx, api, p.http, p.base+pathRefundQuery, map[string]string{"out_refund_no": outRefundNo})
	if err != nil {
		return orders.Refund{}, err
	}
	r, err := refundFromQuery(resp, outTradeNo, outRefundNo)
	if err != nil {
		return orders.Refund{}, badResponse(api, err.Error(), nil)
	}
	return r, nil
}

// refundFromQuery picks outRefundNo out of a refund query answer, whose
// refunds are numbered fields (out_refund_no_0, refund_fee_0, …).
func refundFromQuery(resp map[string]string, outTradeNo, outRefundNo string) (orders.Refund, error) {
	if resp["out_trade_no"] != outTradeNo {
		return orders.Refund{}, errors.New("response for another out_trade_no")
	}
	total, err := parseFen(resp["total_fee"])
	if err != nil {
		return orders.Refund{}, fmt.Errorf("total_fee: %w", err)
	}
	for n := 0; ; n++ {
		no, ok := resp["out_refund_no_"+strconv.Itoa(n)]
		if !ok {
			return orders.Refund{}, errors.New("refund not listed in the response")
		}
		if no != outRefundNo {
			continue
		}
		suffix := "_" + strconv.Itoa(n)
		amount, err := parseFen(resp["refund_fee"+suffix])
		if err != nil {
			return orders.Refund{}, fmt.Errorf("refund_fee%s: %w", suffix, err)
		}
		state, ok := refundState(resp["refund_status"+suffix])
		if !ok {
			return orders.Refund{}, fmt.Errorf("unknown refund_status%s %q", suffix, resp["refund_status"+suffix])
		}
		return orders.Refund{
			OutTradeNo: outTradeNo, TransactionID: resp["transaction_id"], OutRefundNo: outRefundNo,
			RefundID: resp["refund_id"+suffix], State: state, Amount: amount, Total: total,
		}, nil
	}
}

// refundState maps QQ wallet's refund_status. SUCCESS, FAIL and PROCESSING
// follow the QQ wallet documentation; NOTSURE and CHANGE are WeChat Pay v2's
// "retry with the same out_refund_no" and "refund abnormal".
func refundState(s string) (orders.RefundState, bool) {
	switch s {
	case "SUCCESS":
		return orders.RefundSucceeded, true
	case "PROCESSING", "NOTSURE":
		return orders.RefundPending, true
	case "FAIL", "CHANGE":
		return orders.RefundFailed, true
	}
	return "", false
}

// tradeState maps trade_state (query and notification).
func tradeState(s string) (orders.PaymentState, bool) {
	switch s {
	case "SUCCESS":
		return orders.PaymentPaid, true
	case "REFUND":
		return orders.PaymentRefunded, true
	case "NOTPAY", "USERPAYING":
		return orders.PaymentPending, true
	case "CLOSED", "REVOKED":
		return orders.PaymentClosed, true
	case "PAYERROR":
		return orders.PaymentFailed, true
	}
	return "", false
}

// transaction reads a query answer or a notification.
func (p *Pay) transaction(f map[string]string) (orders.Transaction, error) {
	state, ok := tradeState(f["trade_state"])
	if !ok {
		return orders.Transaction{}, fmt.Errorf("unknown trade_state %q", f["trade_state"])
	}
	amount, err := parseFen(f["total_fee"])
	if err != nil {
		return orders.Transaction{}, fmt.Errorf("total_fee: %w", err)
	}
	tx := orders.Transaction{
		AppID:         firstNonEmpty(f["appid"], p.appID),
		MchID:         f["mch_id"],
		OutTradeNo:    f["out_trade_no"],
		TransactionID: f["transaction_id"],
		State:         state,
		Amount:        amount,
		Currency:      firstNonEmpty(f["fee_type"], "CNY"),
		PayerID:       f["openid"],
	}
	if v := f["time_end"]; v != "" {
		if tx.PaidAt, err = time.ParseInLocation(timeLayout, v, shanghai); err != nil {
			return orders.Transaction{}, fmt.Errorf("time_end %q: %w", v, err)
		}
	}
	return tx, nil
}

// call signs fields (with appid, mch_id and a nonce), posts them to u and
// returns the verified answer. Success answers (return_code and result_code
// SUCCESS) must carry a valid sign for this merchant and app; business
// failures must too, except SIGNERROR, which QQ signs with the key minigate
// evidently does not have. Communication failures (return_code FAIL) are
// unsigned and only ever become errors. The caller observes the call.
func (p *Pay) call(ctx context.Context, api string, hc *http.Client, u string, fields map[string]string) (map[string]string, error) {
	req := map[string]string{"appid": p.appID, "mch_id": p.mchID, "nonce_str": nonce()}
	for k, v := range fields {
		if v != "" {
			req[k] = v
		}
	}
	req["sign"] = sign(req, p.apiKey)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(encodeXML(req)))
	if err != nil {
		return nil, fmt.Errorf("qq: %s: %w", api, err)
	}
	hreq.Header.Set("Content-Type", "text/xml; charset=utf-8")
	hresp, err := hc.Do(hreq)
	if err != nil {
		return nil, adapters.TransportError(PlatformQPay, api, err)
	}
	defer hresp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponseBytes))
	if err != nil {
		return nil, adapters.TransportError(PlatformQPay, api, err)
	}
	if hresp.StatusCode != http.StatusOK {
		return nil, statusError(PlatformQPay, api, hresp.StatusCode)
	}
	resp, err := decodeXML(body)
	if err != nil {
		return nil, badResponse(api, "undecodable XML response", err)
	}
	if resp["return_code"] != "SUCCESS" {
		return nil, &adapters.PlatformError{Platform: PlatformQPay, API: api, Reason: adapters.ReasonInvalidRequest,
			Code: firstNonEmpty(resp["return_code"], "FAIL"), SubCode: resp["retcode"],
			Message: firstNonEmpty(resp["return_msg"], resp["retmsg"])}
	}
	signed := signValid(resp, p.apiKey)
	if resp["result_code"] != "SUCCESS" {
		code := resp["err_code"]
		if !signed && code != "SIGNERROR" {
			return nil, badResponse(api, "failure answer without a valid sign", nil)
		}
		return nil, &adapters.PlatformError{Platform: PlatformQPay, API: api, Reason: errCodeReason(code),
			Code: code, Message: resp["err_code_des"]}
	}
	switch {
	case !signed:
		return nil, badResponse(api, "answer without a valid sign", nil)
	case resp["mch_id"] != "" && resp["mch_id"] != p.mchID:
		return nil, badResponse(api, "answer for another merchant", nil)
	case resp["appid"] != "" && resp["appid"] != p.appID:
		return nil, badResponse(api, "answer for another app", nil)
	}
	return resp, nil
}

func badResponse(api, msg string, cause error) *adapters.PlatformError {
	return &adapters.PlatformError{Platform: PlatformQPay, API: api, Reason: adapters.ReasonBadResponse,
		Message: msg, Err: cause}
}

// errCodeReason classifies QQ wallet err_codes. QQ does not publish its
// list in a form we could confirm; these are WeChat Pay v2's codes, which QQ
// wallet's API mirrors.
func errCodeReason(code string) adapters.Reason {
	switch code {
	case "SYSTEMERROR", "BIZERR_NEED_RETRY":
		return adapters.ReasonBusy
	case "ORDERPAID", "ORDERCLOSED", "ORDERREVERSED", "OUT_TRADE_NO_USED", "INVALID_REQUEST", "TRADE_STATE_ERROR":
		return adapters.ReasonConflict
	case "ORDERNOTEXIST", "REFUNDNOTEXIST":
		return adapters.ReasonNotFound
	case "SIGNERROR", "NOAUTH", "APPID_NOT_EXIST", "MCHID_NOT_EXIST", "APPID_MCHID_NOT_MATCH":
		return adapters.ReasonAuth
	case "PARAM_ERROR", "LACK_PARAMS", "XML_FORMAT_ERROR", "NOT_UTF8", "POST_DATA_EMPTY",
		"REQUIRE_POST_METHOD", "INVALID_TRANSACTIONID":
		return adapters.ReasonInvalidRequest
	case "FREQUENCY_LIMITED", "INVALID_REQ_TOO_MUCH":
		return adapters.ReasonRateLimited
	}
	return adapters.ReasonRejected
}

// nonce returns a 32-character random nonce_str.
func nonce() string {
	b := make([]byte, 16)
	// crypto/rand.Read never returns an error (it panics on failure).
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// clientIP returns ip when QQ can take it (IPv4), else a placeholder.
func clientIP(ip string) string {
	if a := net.ParseIP(ip); a != nil && a.To4() != nil && len(ip) <= maxClientIP {
		return ip
	}
	return fallbackClientIP
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// parseFen parses a non-negative integer amount in fen.
func parseFen(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid amount %q", s)
	}
	return v, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
