package sandbox

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestQPaySignPublishedVector checks the simulator's signer against the
// example of WeChat Pay v2's "签名生成算法" page (QQ wallet signs the same
// way).
func TestQPaySignPublishedVector(t *testing.T) {
	t.Parallel()
	fields := map[string]string{
		"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000",
		"body": "test", "nonce_str": "ibuaiVcKdpRxkhJA", "sign": "ignored", "empty": "",
	}
	const want = "9A0A8659F005D6984697E2CA0A9CF3B7"
	if got := qpaySign(fields, "192006250b4c09247ec02edce69f6a2d"); got != want {
		t.Fatalf("qpaySign = %s, want %s", got, want)
	}
}

func TestQPayParseXML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want map[string]string // nil: refused
	}{
		{"flat", `<xml><a>1</a><b><![CDATA[x<y]]></b></xml>`, map[string]string{"a": "1", "b": "x<y"}},
		{"declaration and whitespace", "<?xml version=\"1.0\"?>\n<xml> <a>1</a> </xml>\n", map[string]string{"a": "1"}},
		{"doctype", `<!DOCTYPE xml><xml><a>1</a></xml>`, nil},
		{"entity", `<!DOCTYPE x [<!ENTITY e "v">]><xml><a>&e;</a></xml>`, nil},
		{"nested", `<xml><a><b>1</b></a></xml>`, nil},
		{"repeated", `<xml><a>1</a><a>2</a></xml>`, nil},
		{"other root", `<doc><a>1</a></doc>`, nil},
		{"trailing element", `<xml></xml><a/>`, nil},
		{"truncated", `<xml><a>1</a>`, nil},
	}
	for _, tt := range tests {
		got, err := qpayParseXML([]byte(tt.in))
		if tt.want == nil {
			if err == nil {
				t.Errorf("%s: accepted as %v", tt.name, got)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tt.want) {
			t.Errorf("%s: %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	// Values with "]]>" cannot be CDATA; the encoder escapes them instead.
	in := map[string]string{"a": "x]]>y", "b": "<&>"}
	if got, err := qpayParseXML(qpayXML(in)); err != nil || !maps.Equal(got, in) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
}

// qpayPost signs fields for the test app's merchant (with key), posts them
// to the QQ wallet path and returns the parsed answer.
func (q *qqSim) qpayPost(t *testing.T, path string, fields map[string]string, key string) map[string]string {
	t.Helper()
	f := maps.Clone(fields)
	if _, ok := f["mch_id"]; !ok {
		f["mch_id"] = q.app.QPay.MchID
	}
	if _, ok := f["appid"]; !ok {
		f["appid"] = q.app.AppID
	}
	f["nonce_str"] = randomHex(8)
	f["sign"] = qpaySign(f, key)
	return q.qpayRaw(t, path, qpayXML(f))
}

func (q *qqSim) qpayRaw(t *testing.T, path string, body []byte) map[string]string {
	t.Helper()
	resp, err := q.h.Test(httptest.NewRequest(http.MethodPost, "/qpay/cgi-bin/pay/"+path, bytes.NewReader(body)), -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out, err := qpayParseXML(raw)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d, %v: %s", path, resp.StatusCode, err, raw)
	}
	return out
}

// ok fails unless answer is a signed success.
func (q *qqSim) ok(t *testing.T, answer map[string]string) map[string]string {
	t.Helper()
	if answer["return_code"] != "SUCCESS" || answer["result_code"] != "SUCCESS" || !qpaySignValid(answer, q.app.QPay.APIKey) {
		t.Fatalf("answer %v, want a signed success", answer)
	}
	return answer
}

// failed fails unless answer is a signed result_code FAIL with errCode.
func (q *qqSim) failed(t *testing.T, answer map[string]string, errCode string) {
	t.Helper()
	if answer["return_code"] != "SUCCESS" || answer["result_code"] != "FAIL" || answer["err_code"] != errCode ||
		!qpaySignValid(answer, q.app.QPay.APIKey) {
		t.Fatalf("answer %v, want a signed %s", answer, errCode)
	}
}

func (q *qqSim) order(no string, total int64) map[string]string {
	return map[string]string{
		"body": "商品", "out_trade_no": no, "fee_type": "CNY", "total_fee": strconv.FormatInt(total, 10),
		"spbill_create_ip": "203.0.113.7", "trade_type": "MINIAPP", "notify_url": "https://pay.example.com/n",
		"time_expire": q.clock.Now().Add(time.Hour).In(qpayZone).Format(qpayTimeLayout),
	}
}

func TestQPayRequestChecks(t *testing.T) {
	t.Parallel()
	q := newQQSim(t, "")
	key := q.app.QPay.APIKey

	t.Run("doctype", func(t *testing.T) {
		a := q.qpayRaw(t, "qpay_order_query.cgi", []byte(`<!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><mch_id>&e;</mch_id></xml>`))
		if a["return_code"] != "FAIL" || a["sign"] != "" {
			t.Fatalf("answer %v", a)
		}
	})
	t.Run("unknown merchant", func(t *testing.T) {
		a := q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"mch_id": "1999999999", "out_trade_no": "x"}, key)
		if a["return_code"] != "FAIL" || a["sign"] != "" {
			t.Fatalf("answer %v", a)
		}
	})
	t.Run("bad sign", func(t *testing.T) {
		a := q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"out_trade_no": "x"}, "wrong-key")
		q.failed(t, a, "SIGNERROR")
	})
	t.Run("foreign appid", func(t *testing.T) {
		a := q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"appid": "1104606907", "out_trade_no": "x"}, key)
		q.failed(t, a, "APPID_MCHID_NOT_MATCH")
	})
	refused := []struct {
		name    string
		mutate  func(map[string]string)
		errCode string
	}{
		{"no body", func(f map[string]string) { delete(f, "body") }, "LACK_PARAMS"},
		{"no notify_url", func(f map[string]string) { delete(f, "notify_url") }, "LACK_PARAMS"},
		{"body over 128 bytes", func(f map[string]string) { f["body"] = strings.Repeat("商", 43) }, "PARAM_ERROR"},
		{"out_trade_no over 32", func(f map[string]string) { f["out_trade_no"] = strings.Repeat("a", 33) }, "PARAM_ERROR"},
		{"dollars", func(f map[string]string) { f["fee_type"] = "USD" }, "PARAM_ERROR"},
		{"yuan amount", func(f map[string]string) { f["total_fee"] = "8.88" }, "PARAM_ERROR"},
		{"app payment", func(f map[string]string) { f["trade_type"] = "APP" }, "PARAM_ERROR"},
		{"ipv6", func(f map[string]string) { f["spbill_create_ip"] = "2001:db8::1" }, "PARAM_ERROR"},
		{"relative notify_url", func(f map[string]string) { f["notify_url"] = "/notify" }, "PARAM_ERROR"},
		{"past expiry", func(f map[string]string) {
			f["time_expire"] = q.clock.Now().Add(-time.Minute).In(qpayZone).Format(qpayTimeLayout)
		}, "PARAM_ERROR"},
		{"iso time", func(f map[string]string) { f["time_start"] = "2030-05-06T07:08:09+08:00" }, "PARAM_ERROR"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			f := q.order("O"+randomHex(4), 100)
			tt.mutate(f)
			q.failed(t, q.qpayPost(t, "qpay_unified_order.cgi", f, key), tt.errCode)
		})
	}
	t.Run("injected", func(t *testing.T) {
		q.s.FailQPay(q.app.QPay.MchID, QPayError{API: "order_query", ErrCode: "SYSTEMERROR", ErrCodeDes: "系统超时"})
		q.failed(t, q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"out_trade_no": "x"}, key), "SYSTEMERROR")
		q.failed(t, q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"out_trade_no": "x"}, key), "ORDERNOTEXIST")
	})
}

// TestQPayLedger runs orders and refunds through the merchant's books.
func TestQPayLedger(t *testing.T) {
	t.Parallel()
	q := newQQSim(t, "")
	key := q.app.QPay.APIKey
	ctx := context.Background()

	first := q.ok(t, q.qpayPost(t, "qpay_unified_order.cgi", q.order("O1", 1000), key))
	if first["prepay_id"] == "" || first["trade_type"] != "MINIAPP" {
		t.Fatalf("unified order %v", first)
	}
	again := q.ok(t, q.qpayPost(t, "qpay_unified_order.cgi", q.order("O1", 1000), key))
	if again["prepay_id"] != first["prepay_id"] {
		t.Fatal("repeating a unified order gave another prepay_id")
	}
	q.failed(t, q.qpayPost(t, "qpay_unified_order.cgi", q.order("O1", 999), key), "OUT_TRADE_NO_USED")
	q.failed(t, q.qpayPost(t, "qpay_refund.cgi", map[string]string{"out_trade_no": "O1", "out_refund_no": "R0", "refund_fee": "1"}, key), "INVALID_REQUEST")

	if _, err := q.s.Pay(ctx, q.app, "O1", Faults{Drop: true}); err != nil {
		t.Fatal(err)
	}
	paid := q.ok(t, q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"out_trade_no": "O1"}, key))
	if paid["trade_state"] != "SUCCESS" || paid["transaction_id"] == "" || paid["total_fee"] != "1000" ||
		paid["openid"] != q.s.User(q.app, qpayPayerName).OpenID || paid["time_end"] != q.clock.Now().In(qpayZone).Format(qpayTimeLayout) {
		t.Fatalf("paid order %v", paid)
	}
	byTxn := q.ok(t, q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"transaction_id": paid["transaction_id"]}, key))
	if byTxn["out_trade_no"] != "O1" {
		t.Fatalf("query by transaction_id %v", byTxn)
	}
	q.failed(t, q.qpayPost(t, "qpay_close_order.cgi", map[string]string{"out_trade_no": "O1", "total_fee": "1000"}, key), "ORDERPAID")

	refund := func(no string, fee int64, extra ...string) map[string]string {
		f := map[string]string{"out_trade_no": "O1", "out_refund_no": no, "refund_fee": strconv.FormatInt(fee, 10)}
		for i := 0; i+1 < len(extra); i += 2 {
			f[extra[i]] = extra[i+1]
		}
		return q.qpayPost(t, "qpay_refund.cgi", f, key)
	}
	r1 := q.ok(t, refund("R1", 400))
	if r1["refund_id"] == "" || r1["refund_fee"] != "400" || r1["total_fee"] != "1000" || r1["transaction_id"] != paid["transaction_id"] {
		t.Fatalf("refund %v", r1)
	}
	if again := q.ok(t, refund("R1", 400)); again["refund_id"] != r1["refund_id"] {
		t.Fatal("repeating out_refund_no refunded again")
	}
	q.failed(t, refund("R1", 401), "INVALID_REQUEST")
	q.failed(t, refund("R2", 601), "INVALID_REQUEST") // more than is left
	sum := md5.Sum([]byte("pw"))
	q.ok(t, refund("R2", 600, "op_user_id", q.app.QPay.MchID, "op_user_passwd", hex.EncodeToString(sum[:])))
	q.failed(t, refund("R3", 1, "op_user_id", q.app.QPay.MchID, "op_user_passwd", "pw"), "PARAM_ERROR")
	q.failed(t, refund("R3", 1, "op_user_id", q.app.QPay.MchID), "LACK_PARAMS")

	list := q.ok(t, q.qpayPost(t, "qpay_refund_query.cgi", map[string]string{"out_trade_no": "O1"}, key))
	if list["refund_count"] != "2" || list["out_refund_no_0"] != "R1" || list["out_refund_no_1"] != "R2" ||
		list["refund_status_0"] != "PROCESSING" || list["refund_fee_1"] != "600" {
		t.Fatalf("refund list %v", list)
	}
	q.clock.Advance(qpayRefundDelay)
	one := q.ok(t, q.qpayPost(t, "qpay_refund_query.cgi", map[string]string{"out_refund_no": "R1"}, key))
	if one["refund_count"] != "1" || one["refund_status_0"] != "SUCCESS" || one["refund_id_0"] != r1["refund_id"] {
		t.Fatalf("refund R1 %v", one)
	}
	q.failed(t, q.qpayPost(t, "qpay_refund_query.cgi", map[string]string{"out_refund_no": "R9"}, key), "REFUNDNOTEXIST")
	if st := q.ok(t, q.qpayPost(t, "qpay_order_query.cgi", map[string]string{"out_trade_no": "O1"}, key)); st["trade_state"] != "REFUND" {
		t.Fatalf("order after refunds %v", st)
	}

	// Close: the total must match; a closed order cannot be paid.
	q.ok(t, q.qpayPost(t, "qpay_unified_order.cgi", q.order("O2", 50), key))
	q.failed(t, q.qpayPost(t, "qpay_close_order.cgi", map[string]string{"out_trade_no": "O2"}, key), "LACK_PARAMS")
	q.failed(t, q.qpayPost(t, "qpay_close_order.cgi", map[string]string{"out_trade_no": "O2", "total_fee": "51"}, key), "PARAM_ERROR")
	q.ok(t, q.qpayPost(t, "qpay_close_order.cgi", map[string]string{"out_trade_no": "O2", "total_fee": "50"}, key))
	q.failed(t, q.qpayPost(t, "qpay_close_order.cgi", map[string]string{"out_trade_no": "O2", "total_fee": "50"}, key), "ORDERCLOSED")
	if _, err := q.s.Pay(ctx, q.app, "O2", Faults{}); err == nil {
		t.Fatal("a closed order was paid")
	}

	// An order past time_expire cannot be paid.
	q.ok(t, q.qpayPost(t, "qpay_unified_order.cgi", q.order("O3", 50), key))
	q.clock.Advance(2 * time.Hour)
	if _, err := q.s.Pay(ctx, q.app, "O3", Faults{}); err == nil {
		t.Fatal("an expired order was paid")
	}

	st := q.s.qpay
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.ledger(q.app.QPay.MchID)
	if len(l.orderList) != 3 || l.orderList[0].OutTradeNo != "O1" || len(l.refundList) != 2 ||
		l.orderList[0].Refunded != 1000 || l.orderList[1].State != qpayTradeClosed {
		t.Fatalf("ledger: %d orders, %d refunds", len(l.orderList), len(l.refundList))
	}
}

// TestQPayNotifications checks what payQPay posts, with each fault.
func TestQPayNotifications(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
		_, _ = io.WriteString(w, "<xml><return_code>SUCCESS</return_code></xml>")
	}))
	t.Cleanup(srv.Close)
	q := newQQSim(t, "")
	key := q.app.QPay.APIKey
	one := int64(1)
	tests := []struct {
		name   string
		faults Faults
		check  func(t *testing.T, n map[string]string, err error)
		copies int
	}{
		{"clean", Faults{}, func(t *testing.T, n map[string]string, err error) {
			if _, ok := n["attach"]; ok {
				t.Fatal("an empty attach was sent")
			}
			if err != nil || !qpaySignValid(n, key) || n["trade_state"] != "SUCCESS" || n["total_fee"] != "700" ||
				n["mch_id"] != q.app.QPay.MchID || n["appid"] != q.app.AppID || n["time_end"] == "" {
				t.Fatalf("notification %v, %v", n, err)
			}
		}, 1},
		{"bad signature", Faults{BadSignature: true}, func(t *testing.T, n map[string]string, err error) {
			if err != nil || qpaySignValid(n, key) {
				t.Fatalf("notification %v, %v: want an invalid sign", n, err)
			}
		}, 1},
		{"foreign merchant", Faults{ForeignMerchant: true}, func(t *testing.T, n map[string]string, err error) {
			if err != nil || !qpaySignValid(n, key) || n["mch_id"] != qpayForeignMchID {
				t.Fatalf("notification %v, %v", n, err)
			}
		}, 1},
		{"amount", Faults{Amount: &one}, func(t *testing.T, n map[string]string, err error) {
			if err != nil || !qpaySignValid(n, key) || n["total_fee"] != "1" || n["cash_fee"] != "1" {
				t.Fatalf("notification %v, %v", n, err)
			}
		}, 1},
		{"truncated", Faults{Truncate: true}, func(t *testing.T, n map[string]string, err error) {
			if err == nil {
				t.Fatalf("truncated notification parsed: %v", n)
			}
		}, 1},
		{"duplicates", Faults{Duplicates: 3}, func(t *testing.T, n map[string]string, err error) {
			if err != nil || !qpaySignValid(n, key) {
				t.Fatalf("notification %v, %v", n, err)
			}
		}, 4},
	}
	for _, tt := range tests {
		mu.Lock()
		got = nil
		mu.Unlock()
		no := "N" + randomHex(6)
		f := q.order(no, 700)
		f["notify_url"] = srv.URL
		q.ok(t, q.qpayPost(t, "qpay_unified_order.cgi", f, key))
		rep, err := q.s.Pay(context.Background(), q.app, no, tt.faults)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		bodies := got
		mu.Unlock()
		if len(bodies) != tt.copies || len(rep.Deliveries) != tt.copies {
			t.Fatalf("%s: %d bodies, %d deliveries; want %d", tt.name, len(bodies), len(rep.Deliveries), tt.copies)
		}
		for _, b := range bodies[1:] {
			if !bytes.Equal(b, bodies[0]) {
				t.Fatalf("%s: copies differ", tt.name)
			}
		}
		n, err := qpayParseXML(bodies[0])
		t.Run(tt.name, func(t *testing.T) { tt.check(t, n, err) })
		if rep.Details["notification_id"] != rep.Details["transaction_id"].(string)+":SUCCESS" {
			t.Fatalf("%s: details %v", tt.name, rep.Details)
		}
	}
}
