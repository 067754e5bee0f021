package wechat

import (
	"testing"

	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	mpcontext "github.com/silenceper/wechat/v2/miniprogram/context"
	"github.com/silenceper/wechat/v2/miniprogram/virtualpayment"
)

// The doc's example signData, AppKey and session_key used by the §N2.2
// vectors (protocols.md) and by WeChat's own examples.
const (
	docSignData   = `{"offerId":"123","buyQuantity":1,"env":0,"currencyType":"CNY","productId":"testproductId","goodsPrice":10,"outTradeNo":"xxxxxx","attach":"testdata"}`
	docAppKey     = "12345"
	docSessionKey = "9hAb/NEYUlkaMBEsmFgzig=="
)

// Vectors: protocols §N2.2 (computed with Python's hmac, Appendix B) and
// two published ones — WeChat's 用户登录态签名 page (session_key
// o0q0otL8aEzpcZL/FT9WsQ==, body {"foo":"bar"}), and the output of the
// Python example on WeChat's 签名详解 page as quoted in a community thread
// (https://developers.weixin.qq.com/community/minigame/doc/0008829ee847b8320620322a46b800:
// the body with spaces after ':' and ',').
func TestXPaySignatureVectors(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"client paySig (§N2.2)", XPaySig(docAppKey, xpayClientURI, []byte(docSignData)),
			"0ce2a9fcab3532e9f78dd3beb841806c0c08a24ec26b04c366584ac06d852bb0"},
		{"client signature (§N2.2)", XPayUserSignature(docSessionKey, []byte(docSignData)),
			"8e08bc05e10243e2e943385292e2063be327f8285c0db753a5c3e5db5745cb69"},
		{"query_user_balance pay_sig (§N2.2)", XPaySig(docAppKey, "/xpay/query_user_balance",
			[]byte(`{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","env":0,"user_ip":"127.0.0.1"}`)),
			"43d272238029b654e8617c12c1cb6a62f28909441366ec1d41920024bb21b220"},
		{"query_user_balance signature (§N2.2)", XPayUserSignature(docSessionKey,
			[]byte(`{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","env":0,"user_ip":"127.0.0.1"}`)),
			"4cbb72d564c26842657258092fba9170812c4fe26a221691d0fc04bcc7409229"},
		{"query_order pay_sig (§N2.2)", XPaySig(docAppKey, "/xpay/query_order",
			[]byte(`{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","env":0,"order_id":"ORDER_20260101_0001"}`)),
			"493b9312a674725307cc718f3fcbb350008c7bbaad41a40bbf4549f746085114"},
		{"login-state signature (WeChat doc)", XPayUserSignature("o0q0otL8aEzpcZL/FT9WsQ==", []byte(`{"foo":"bar"}`)),
			"654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"},
		{"pay_sig of the doc's Python example", XPaySig(docAppKey, "/xpay/query_user_balance",
			[]byte(`{"openid": "xxx", "user_ip": "127.0.0.1", "env": 0}`)),
			"c37809f27c6d7fd1837ad2500a04512b66b34fd793a39a385fade56dca89a4b5"},
		{"signature of the doc's Python example", XPayUserSignature(docSessionKey,
			[]byte(`{"openid": "xxx", "user_ip": "127.0.0.1", "env": 0}`)),
			"089d9e8dc5d308977360c4b79ec600a93d736802802a807d634192328032f6c7"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}

// minigate's signatures equal silenceper's own signer's (v2.1.14
// virtualpayment: PaySign = HMAC(AppKey, url+"&"+data), Signature =
// HMAC(sessionKey, data)), for the client call and a server API.
func TestXPaySignaturesMatchSilenceper(t *testing.T) {
	vp := virtualpayment.NewVirtualPayment(&mpcontext.Context{Config: &mpconfig.Config{AppKey: "k3y-for-tests"}})
	vp.SetSessionKey("c2Vzc2lvbmtleTEyMzQ1Ng==")
	body := `{"openid":"oUser","env":1,"user_ip":"10.0.0.1","amount":30,"order_id":"SPEND0001","payitem":"[]","remark":"","device_type":1}`
	for _, uri := range []string{xpayClientURI, "/xpay/currency_pay", "/xpay/query_order"} {
		want, err := vp.PaySign(uri, body)
		if err != nil {
			t.Fatal(err)
		}
		if got := XPaySig("k3y-for-tests", uri, []byte(body)); got != want {
			t.Errorf("pay_sig for %s = %s, silenceper %s", uri, got, want)
		}
	}
	want, err := vp.Signature(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := XPayUserSignature("c2Vzc2lvbmtleTEyMzQ1Ng==", []byte(body)); got != want {
		t.Errorf("signature = %s, silenceper %s", got, want)
	}
}

// signData is encoded exactly like the documentation's example: the same
// fields, order and number types, no spaces, no trailing newline.
func TestXPaySignDataEncoding(t *testing.T) {
	got, err := xpayJSON(xpaySignData{
		OfferID: "123", BuyQuantity: 1, Env: 0, CurrencyType: "CNY", ProductID: "testproductId",
		GoodsPrice: 10, OutTradeNo: "xxxxxx", Attach: "testdata",
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != docSignData {
		t.Fatalf("signData\n got %s\nwant %s", got, docSignData)
	}
	coins, err := xpayJSON(xpaySignData{OfferID: "123", BuyQuantity: 60, Env: 1, CurrencyType: "CNY", OutTradeNo: "MG0123456789", Attach: "<a&b>"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"offerId":"123","buyQuantity":60,"env":1,"currencyType":"CNY","outTradeNo":"MG0123456789","attach":"<a&b>"}`; string(coins) != want {
		t.Fatalf("coin signData\n got %s\nwant %s", coins, want)
	}
}
