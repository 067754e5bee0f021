package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/wechat"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

var billDay = reconcile.Date{Year: 2024, Month: 5, Day: 1}

func TestParseTradeBillSamples(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file    string
		rows    int
		summary reconcile.Summary
		check   func(t *testing.T, b *reconcile.Bill)
	}{
		{
			file: "all_bom_crlf.csv", rows: 4,
			summary: reconcile.Summary{Count: 4, Amount: 4781, Refunds: 400, Fees: 24},
			check: func(t *testing.T, b *reconcile.Bill) {
				first := b.Rows[0]
				if first.Kind != reconcile.KindPayment || first.OutTradeNo != "SHOP-1001" || first.Amount != 1280 ||
					first.TransactionID != "4200002024050112345678901" || first.Fee != 8 ||
					!first.Time.Equal(time.Date(2024, 5, 1, 8, 15, 2, 0, reconcile.Zone)) {
					t.Errorf("first row %+v", first)
				}
				// A coupon: the order total (订单金额) is compared, the
				// settled amount is what the summary adds up; a comma
				// inside the product name does not shift the columns.
				if r := b.Rows[1]; r.Amount != 4000 || r.Settled != 3500 || r.Fee != 18 {
					t.Errorf("coupon row %+v", r)
				}
				rf := b.Rows[3]
				if rf.Kind != reconcile.KindRefund || rf.OutTradeNo != "SHOP-1001" || rf.OutRefundNo != "RF-1001-1" ||
					rf.RefundID != "50300000012024050100000000001" || rf.Amount != 400 || rf.Settled != 400 || rf.Fee != -2 {
					t.Errorf("refund row %+v", rf)
				}
			},
		},
		{file: "empty_day.csv", rows: 0, summary: reconcile.Summary{}},
		{
			file: "v2_layout_gbk.csv", rows: 2,
			summary: reconcile.Summary{Count: 2, Amount: 100, Refunds: 100, Fees: 0},
			check: func(t *testing.T, b *reconcile.Bill) {
				if b.Rows[0].Amount != 100 || b.Rows[1].Kind != reconcile.KindRefund || b.Rows[1].Amount != 100 {
					t.Errorf("v2 rows %+v", b.Rows)
				}
			},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			b, err := wechat.ParseTradeBill(billDay, testenv.Testdata(t, "tradebill", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Rows) != tc.rows || b.Summary == nil || *b.Summary != tc.summary {
				t.Fatalf("rows %d, summary %+v; want %d, %+v", len(b.Rows), b.Summary, tc.rows, tc.summary)
			}
			if got := b.Computed(); got != tc.summary {
				t.Errorf("the rows add up to %+v, the summary says %+v", got, tc.summary)
			}
			if b.Platform != wechat.PayPlatform || b.Date != billDay {
				t.Errorf("bill %s %s", b.Platform, b.Date)
			}
			if tc.check != nil {
				tc.check(t, b)
			}
		})
	}
}

func TestParseTradeBillRejects(t *testing.T) {
	t.Parallel()
	good := string(testenv.Testdata(t, "tradebill", "all_bom_crlf.csv"))
	lines := strings.Split(good, "\r\n")
	for _, tc := range []struct {
		name, text, want string
	}{
		{"not a bill", "hello,world\r\n", "no trade bill header"},
		{"bad amount", strings.Replace(good, "`12.80", "`12.8.0", 1), "应结订单金额"},
		{"refund without number", strings.Replace(good, "`RF-1001-1", "`", 1), "商户退款单号"},
		{"summary without row", strings.Join(lines[:6], "\r\n"), "summary header without a summary row"},
		{"content after summary", good + "`1,`2\r\n", "content after the summary row"},
		{"bad count", strings.Replace(good, "\r\n`4,", "\r\n`four,", 1), "总交易单数"},
		{"bad time", strings.Replace(good, "`2024-05-01 08:15:02", "`noon", 1), "not a bill time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := wechat.ParseTradeBill(billDay, []byte(tc.text))
			var pe *reconcile.ParseError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a ParseError with %q", err, tc.want)
			}
		})
	}
	if b, err := wechat.ParseTradeBill(billDay, nil); err != nil || len(b.Rows) != 0 || b.Summary != nil {
		t.Errorf("an empty file is an empty day: %+v, %v", b, err)
	}
}

// TestDownloadBill runs the two-step download against the simulator: the
// signed tradebill answer, the unsigned gzip download, its SHA1 check.
func TestDownloadBill(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{sandbox.KeyModePublicKey, sandbox.KeyModeCertificate} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := paySetup(t, mode, nil)
			ctx := context.Background()
			today := reconcile.DateOf(time.Now())

			_, err := e.pay.DownloadBill(ctx, today)
			var nr *reconcile.NotReadyError
			if !errors.As(err, &nr) || !nr.RetryAt.Equal(today.ReadyAt()) {
				t.Fatalf("before 10:00 tomorrow: %v, want not ready until %v", err, today.ReadyAt())
			}
			if err := e.sim.MarkBillReady(e.sb.ID, today.String()); err != nil {
				t.Fatal(err)
			}
			// Ready early but empty: WeChat Pay answers NO_STATEMENT_EXIST,
			// which before the due time may still mean "not generated".
			if _, err := e.pay.DownloadBill(ctx, today); !errors.Is(err, reconcile.ErrNotReady) {
				t.Fatalf("empty day before it is due: %v", err)
			}
			later, err := wechat.NewPay(e.cfg, adapters.Options{
				Endpoints: e.opts.Endpoints, Timeout: e.opts.Timeout, Logger: e.opts.Logger,
				Now: func() time.Time { return time.Now().Add(48 * time.Hour) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if b, err := later.DownloadBill(ctx, today); err != nil || len(b.Rows) != 0 {
				t.Fatalf("empty day once due: %+v, %v", b, err)
			}

			nos := []string{"BILL" + payHex(6), "BILL" + payHex(6)}
			for i, no := range nos {
				e.prepay(t, no, int64(100*(i+1)))
				if _, err := e.sim.Pay(ctx, e.sb, no, sandbox.Faults{Drop: true}); err != nil {
					t.Fatal(err)
				}
			}
			rf, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: nos[1], OutRefundNo: "RF" + payHex(6), Amount: 50, Total: 200})
			if err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 5*time.Second, "the refund to succeed", func() bool {
				r, err := e.pay.QueryRefund(ctx, nos[1], rf.OutRefundNo)
				return err == nil && r.State == orders.RefundSucceeded
			})
			b, err := e.pay.DownloadBill(ctx, today)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Rows) != 3 || b.Summary == nil || *b.Summary != b.Computed() {
				t.Fatalf("bill %+v summary %+v", b.Rows, b.Summary)
			}
			got := map[string]reconcile.Row{}
			for _, r := range b.Rows {
				got[string(r.Kind)+":"+r.OutTradeNo] = r
			}
			if got["payment:"+nos[0]].Amount != 100 || got["payment:"+nos[1]].Amount != 200 ||
				got["refund:"+nos[1]].OutRefundNo != rf.OutRefundNo || got["refund:"+nos[1]].Amount != 50 {
				t.Errorf("rows %+v", got)
			}

			if err := e.sim.DivergeBill(e.sb.ID, today.String(), sandbox.BillDivergence{Tamper: true}); err != nil {
				t.Fatal(err)
			}
			_, err = e.pay.DownloadBill(ctx, today)
			if pe, ok := adapters.AsPlatformError(err); !ok || pe.Reason != adapters.ReasonBadResponse || !strings.Contains(pe.Message, "SHA1") {
				t.Fatalf("tampered download: %v", err)
			}
		})
	}
}

func TestDownloadBillRefusedDates(t *testing.T) {
	t.Parallel()
	e := paySetup(t, sandbox.KeyModePublicKey, nil)
	for _, d := range []reconcile.Date{reconcile.DateOf(time.Now()).AddDays(2), reconcile.DateOf(time.Now()).AddDays(-200)} {
		_, err := e.pay.DownloadBill(context.Background(), d)
		if pe, ok := adapters.AsPlatformError(err); !ok || pe.Code != "INVALID_REQUEST" || pe.API != "tradebill" {
			t.Errorf("%s: %v", d, err)
		}
	}
}

// FuzzParseTradeBill's seeds are small bills under
// testdata/fuzz/FuzzParseTradeBill (payments and refunds, an empty day, an
// older GBK layout): the full samples are too long for the fuzzer to
// minimise quickly.
func FuzzParseTradeBill(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := wechat.ParseTradeBill(billDay, data)
		if !testenv.ParsedBill(t, b, err) {
			return
		}
		for _, r := range b.Rows {
			if r.Kind == reconcile.KindRefund && r.Amount < 0 {
				t.Fatalf("refund with a negative amount: %+v", r)
			}
		}
	})
}

// BenchmarkParseTradeBill parses a day of 10,000 payments and 1,000 refunds.
func BenchmarkParseTradeBill(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n")
	for i := range 11000 {
		state, settled, refundNo, refund, fee := "SUCCESS", "12.34", "0", "0.00", "0.07"
		if i >= 10000 {
			state, settled, refundNo, refund, fee = "REFUND", "0.00", fmt.Sprintf("R%08d", i), "1.00", "-0.01"
		}
		fmt.Fprintf(&sb, "`2024-05-01 12:00:00,`wx8888888888888888,`1900000109,`0,`,`42000%023d,`ORDER%08d,`oUser,`JSAPI,`%s,`OTHERS,`CNY,`%s,`0.00,`0,`%s,`%s,`0.00,`,`,`商品,`,`%s,`0.60%%,`%s,`%s,`\r\n",
			i, i%10000, state, settled, refundNo, refund, fee, settled, refund)
	}
	sb.WriteString("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n`11000,`123400.00,`1000.00,`0.00,`690.00,`123400.00,`1000.00\r\n")
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		bill, err := wechat.ParseTradeBill(billDay, data)
		if err != nil || len(bill.Rows) != 11000 || *bill.Summary != bill.Computed() {
			b.Fatalf("%v %+v", err, bill.Summary)
		}
	}
}
