package qq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/qq"
	"github.com/minigate/minigate/internal/config"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

var billDay = reconcile.Date{Year: 2024, Month: 5, Day: 1}

func TestParseStatementSamples(t *testing.T) {
	t.Parallel()
	full := reconcile.Summary{Count: 3, Amount: 3790, Refunds: 990, Fees: 17}
	for _, tc := range []struct {
		file    string
		rows    int
		summary reconcile.Summary
	}{
		{"all_crlf.csv", 3, full},
		{"all_gbk_lf.csv", 3, full},
		{"empty_day_bom.csv", 0, reconcile.Summary{}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			b, err := qq.ParseStatement(billDay, testenv.Testdata(t, "statement", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Rows) != tc.rows || b.Summary == nil || *b.Summary != tc.summary || b.Computed() != tc.summary {
				t.Fatalf("rows %d, summary %+v, computed %+v", len(b.Rows), b.Summary, b.Computed())
			}
			if tc.rows == 0 {
				return
			}
			discounted, ref := b.Rows[1], b.Rows[2]
			if discounted.OutTradeNo != "QQ-2002" || discounted.Amount != 3000 || discounted.Settled != 2800 || discounted.Fee != 17 {
				t.Errorf("discounted payment (a comma in the product name) %+v", discounted)
			}
			if ref.Kind != reconcile.KindRefund || ref.OutTradeNo != "QQ-2001" || ref.OutRefundNo != "QQR-2001-1" ||
				ref.RefundID != "11212024050100000000000001" || ref.Amount != 990 || ref.Fee != -6 ||
				!ref.Time.Equal(time.Date(2024, 5, 1, 12, 0, 5, 0, reconcile.Zone)) {
				t.Errorf("refund row %+v", ref)
			}
		})
	}
}

func TestParseStatementRejects(t *testing.T) {
	t.Parallel()
	good := string(testenv.Testdata(t, "statement", "all_crlf.csv"))
	for _, tc := range []struct{ name, text, want string }{
		{"no header", "a,b,c\r\n", "no statement header"},
		{"bad amount", strings.Replace(good, "`9.90,`0.00,`9.90", "`9,90,`0.00,`9.90", 1), "订单金额"},
		{"refund without number", strings.Replace(good, "`QQR-2001-1", "`", 1), "商户退款订单号"},
		{"summary without row", strings.Split(good, "总交易单数")[0] + "总交易单数,总交易额\r\n", "summary header without a summary row"},
		{"content after summary", good + "`x\r\n", "content after the summary row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := qq.ParseStatement(billDay, []byte(tc.text))
			var pe *reconcile.ParseError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a ParseError with %q", err, tc.want)
			}
		})
	}
}

// TestDownloadBill runs the statement download against the simulator.
func TestDownloadBill(t *testing.T) {
	t.Parallel()
	e := setup(t, "")
	pay := e.pay(t)
	ctx := context.Background()
	today := reconcile.DateOf(time.Now())

	_, err := pay.DownloadBill(ctx, today)
	var nr *reconcile.NotReadyError
	if !errors.As(err, &nr) || nr.Platform != qq.PlatformQPay {
		t.Fatalf("before 10:00 tomorrow: %v", err)
	}
	if err := e.sim.MarkBillReady(e.cfg.ID, today.String()); err != nil {
		t.Fatal(err)
	}
	// "No Bill Exist" before the statement is due may mean "not generated".
	if _, err := pay.DownloadBill(ctx, today); !errors.Is(err, reconcile.ErrNotReady) {
		t.Fatalf("empty day before it is due: %v", err)
	}
	laterPay := e.payWith(t, func(_ *config.Pay, o *adapters.Options) {
		o.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	})
	if b, err := laterPay.DownloadBill(ctx, today); err != nil || len(b.Rows) != 0 {
		t.Fatalf("empty day once due: %+v, %v", b, err)
	}

	s := newSink(t, pay)
	nos := []string{outTradeNo(), outTradeNo()}
	for i, no := range nos {
		if _, err := pay.Prepay(ctx, prepayRequest(no, s.URL, int64(500*(i+1)))); err != nil {
			t.Fatal(err)
		}
		if _, err := e.sim.Pay(ctx, e.sb, no, sandbox.Faults{Drop: true}); err != nil {
			t.Fatal(err)
		}
	}
	rf, err := pay.Refund(ctx, orders.RefundRequest{OutTradeNo: nos[0], OutRefundNo: "R" + nos[0][1:16], Amount: 100, Total: 500})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the refund to succeed", func() bool {
		r, err := pay.QueryRefund(ctx, nos[0], rf.OutRefundNo)
		return err == nil && r.State == orders.RefundSucceeded
	})
	if err := e.sim.DivergeBill(e.cfg.ID, today.String(), sandbox.BillDivergence{Omit: []string{nos[1]}}); err != nil {
		t.Fatal(err)
	}
	b, err := pay.DownloadBill(ctx, today)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Rows) != 2 || b.Rows[0].OutTradeNo != nos[0] || b.Rows[0].Amount != 500 ||
		b.Rows[1].OutRefundNo != rf.OutRefundNo || b.Rows[1].Amount != 100 || b.Summary == nil || *b.Summary != b.Computed() {
		t.Fatalf("bill %+v summary %+v", b.Rows, b.Summary)
	}

	badPay := e.payWith(t, func(p *config.Pay, _ *adapters.Options) { p.APIKey = strings.Repeat("0", len(p.APIKey)) })
	_, err = badPay.DownloadBill(ctx, today)
	if pe, ok := adapters.AsPlatformError(err); !ok || pe.Reason != adapters.ReasonAuth {
		t.Errorf("wrong API key: %v", err)
	}
}

func FuzzParseStatement(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := qq.ParseStatement(billDay, data)
		if !testenv.ParsedBill(t, b, err) {
			return
		}
		for _, r := range b.Rows {
			if r.Amount < 0 {
				t.Fatalf("row %+v", r)
			}
		}
	})
}
