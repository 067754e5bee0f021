package wechat_test

import (
	"encoding/json"
	"testing"

	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/reconcile"
)

// FuzzParseXPayPush: any JSON object, for any virtual payment event, is
// either read with the identifiers its dedup key needs or refused; it
// never panics.
func FuzzParseXPayPush(f *testing.F) {
	f.Add(wechat.XPayEventGoodsDeliver, []byte(`{"OpenId":"oU","OutTradeNo":"GOODS_0001","Env":0,"WeChatPayInfo":{"MchOrderNo":"M","TransactionId":"4200","PaidTime":1714036504},"GoodsInfo":{"ProductId":"p","Quantity":2,"OrigPrice":1200,"ActualPrice":1200,"Attach":"a"}}`))
	f.Add(wechat.XPayEventCoinPay, []byte(`{"openid":"oU","OutTradeNo":"COINS_001","env":"1","WechatPayInfo":"","GoodsInfo":{"Quantity":"60","ActualPrice":"600"}}`))
	f.Add(wechat.XPayEventRefund, []byte(`{"OpenId":"oU","MchRefundId":"RF1","MchOrderId":"GOODS_0001","RefundFee":800,"RetCode":0,"RetryTimes":2}`))
	f.Add(wechat.XPayEventComplaint, []byte(`{"OpenId":"oU","ComplaintId":"2000","MchOrderId":"GOODS_0001","ComplaintTime":1714036504}`))
	f.Fuzz(func(t *testing.T, event string, doc []byte) {
		var fields map[string]any
		if json.Unmarshal(doc, &fields) != nil {
			return
		}
		p, err := wechat.ParseXPayPush(event, fields)
		if err != nil {
			return
		}
		if !wechat.IsXPayEvent(p.Event) || (p.Env != 0 && p.Env != 1) {
			t.Fatalf("accepted %+v", p)
		}
		switch p.Event {
		case wechat.XPayEventRefund:
			if p.RefundID == "" || p.OutTradeNo == "" {
				t.Fatalf("refund without its ids: %+v", p)
			}
		case wechat.XPayEventComplaint:
			if p.ComplaintID == "" {
				t.Fatalf("complaint without its id: %+v", p)
			}
		default:
			if p.OutTradeNo == "" || p.OpenID == "" {
				t.Fatalf("payment without its ids: %+v", p)
			}
		}
	})
}

// FuzzParseXPayBill: any file is a bill whose rows name their orders, or a
// *reconcile.ParseError.
func FuzzParseXPayBill(f *testing.F) {
	f.Add([]byte("交易时间,交易类型,商户订单号,微信订单号,微信支付订单号,商户退款单号,微信退款单号,支付模式,道具ID,购买数量,订单金额,退款金额,技术服务费,用户openid\n" +
		"2026-05-01 12:00:00,支付,GOODS_0001,wxo1,,,,short_series_goods,p,2,1200,,7,oU\n" +
		"2026-05-01 13:00:00,退款,GOODS_0001,wxo1,,RF1,wxo2,short_series_goods,p,2,1200,800,-5,oU\n"))
	f.Add([]byte("\ufeff交易时间,交易类型,商户订单号,订单金额\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := wechat.ParseXPayBill(data, reconcile.Date{Year: 2026, Month: 5, Day: 1})
		if !testenv.ParsedBill(t, b, err) {
			return
		}
		for _, r := range b.Rows {
			if r.Amount <= 0 {
				t.Fatalf("row with a non-positive amount: %+v", r)
			}
		}
	})
}
