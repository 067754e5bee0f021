package wechat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Virtual payment (虚拟支付, xpay) signatures, all lowercase hex of
// HMAC-SHA256 (protocols §N2.2; WxJava WxMaXPaySigParams, silenceper
// virtualpayment PaySign/Signature, WeChat's signature doc):
//
//	paySig    key AppKey of signData.env   message "requestVirtualPayment&" + signData   (wx.requestVirtualPayment)
//	signature key session_key              message signData                              (wx.requestVirtualPayment)
//	pay_sig   key AppKey of body.env       message uri + "&" + body, uri without query   (server APIs)
//	signature key session_key              message body                                  (query_user_balance, currency_pay, cancel_currency_pay)
//
// The session_key is used as the string code2Session returned (not
// base64-decoded), and the bytes signed are exactly the bytes sent.

// xpayClientURI is the "uri" of the client-side paySig.
const xpayClientURI = "requestVirtualPayment"

// XPaySig is pay_sig (and, with uri "requestVirtualPayment", the client's
// paySig): hex(HMAC-SHA256(appKey, uri + "&" + body)).
func XPaySig(appKey, uri string, body []byte) string {
	m := hmac.New(sha256.New, []byte(appKey))
	m.Write([]byte(uri))
	m.Write([]byte{'&'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// XPayUserSignature is the user-state signature: hex(HMAC-SHA256(sessionKey,
// body)). With an empty body it is checksession's signature.
func XPayUserSignature(sessionKey string, body []byte) string {
	m := hmac.New(sha256.New, []byte(sessionKey))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Virtual payment modes.
const (
	XPayModeGoods = "short_series_goods" // 道具直购
	XPayModeCoins = "short_series_coin"  // 代币充值
)

// Virtual payment environments (signData.env and every API body's env).
const (
	XPayEnvProduction = 0
	XPayEnvSandbox    = 1
)

// xpaySignData is signData, in the field order of WeChat's own example.
// productId and goodsPrice go with goods mode only; buyQuantity, env and
// goodsPrice are JSON numbers (strings are refused by WeChat). The
// optional platform field is left out: the current documentation's example
// has none, and adding it is reported to break goods mode.
type xpaySignData struct {
	OfferID      string `json:"offerId"`
	BuyQuantity  int64  `json:"buyQuantity"`
	Env          int    `json:"env"`
	CurrencyType string `json:"currencyType"`
	ProductID    string `json:"productId,omitempty"`
	GoodsPrice   int64  `json:"goodsPrice,omitempty"`
	OutTradeNo   string `json:"outTradeNo"`
	Attach       string `json:"attach"`
}

// xpayJSON encodes v as compact JSON without HTML escapes and without the
// encoder's trailing newline: the exact bytes that are signed and sent.
func xpayJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("wechat: xpay: encode: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}
