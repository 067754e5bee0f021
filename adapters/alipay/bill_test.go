package alipay_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/minigate/minigate/adapters"
	"github.com/minigate/minigate/adapters/alipay"
	"github.com/minigate/minigate/internal/testenv"
	"github.com/minigate/minigate/orders"
	"github.com/minigate/minigate/reconcile"
	"github.com/minigate/minigate/sandbox"
)

var billDay = reconcile.Date{Year: 2024, Month: 5, Day: 1}

// zipOf zips files (name, body) as Alipay does, names in GBK.
func zipOf(t testing.TB, files ...[2][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: string(f[0]), NonUTF8: true, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseBillZipSample(t *testing.T) {
	t.Parallel()
	b, err := alipay.ParseBillZip(billDay, testenv.Testdata(t, "bill", "trade_20240501.csv.zip"))
	if err != nil {
		t.Fatal(err)
	}
	want := reconcile.Summary{Count: 5, Amount: 13601, Refunds: 601, Fees: 78}
	if len(b.Rows) != 5 || b.Summary == nil || *b.Summary != want || b.Computed() != want {
		t.Fatalf("rows %d, summary %+v, computed %+v; want %+v", len(b.Rows), b.Summary, b.Computed(), want)
	}
	pay, discounted, ref, blank := b.Rows[0], b.Rows[1], b.Rows[2], b.Rows[4]
	if pay.Kind != reconcile.KindPayment || pay.OutTradeNo != "ALI-1001" || pay.TransactionID != "2024050122001400001000000001" ||
		pay.Amount != 1800 || pay.Fee != 11 || !pay.Time.Equal(time.Date(2024, 5, 1, 9, 12, 31, 0, reconcile.Zone)) {
		t.Errorf("payment row (ids lose their TAB, fees are a cost) %+v", pay)
	}
	if discounted.Amount != 12800 || discounted.Settled != 11800 {
		t.Errorf("merchant discount: order amount %d, received %d", discounted.Amount, discounted.Settled)
	}
	if ref.Kind != reconcile.KindRefund || ref.OutRefundNo != "REFUND-1001-A" || ref.Amount != 600 || ref.Fee != -4 || ref.Status != "退款" {
		t.Errorf("refund row (negative amounts become positive, the fee comes back) %+v", ref)
	}
	if blank.OutRefundNo != "ALI-1009" {
		t.Errorf("a refund without a request number is Alipay's default, the out_trade_no: %+v", blank)
	}
}

func TestParseBillZipVariants(t *testing.T) {
	t.Parallel()
	detail, summary := testenv.Testdata(t, "bill", "detail_gbk.csv"), testenv.Testdata(t, "bill", "summary_gbk.csv")
	gbkName := func(s string) []byte {
		b, err := simplifiedchinese.GBK.NewEncoder().Bytes([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	utf8Detail, err := reconcile.DecodeText(detail)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		zip     []byte
		rows    int
		summary *reconcile.Summary
		err     string
	}{
		{
			name: "empty day", zip: testenv.Testdata(t, "bill", "empty_day.csv.zip"),
			summary: &reconcile.Summary{},
		},
		{
			// Files are found by content, in any order and under any name.
			name: "summary first, odd names",
			zip:  zipOf(t, [2][]byte{gbkName("汇总.csv"), summary}, [2][]byte{[]byte("a.csv"), detail}),
			rows: 5, summary: &reconcile.Summary{Count: 5, Amount: 13601, Refunds: 601, Fees: 78},
		},
		{
			// Without the summary file, fees are the rows' own.
			name: "detail only, re-saved as UTF-8 with a BOM",
			zip:  zipOf(t, [2][]byte{[]byte("d.csv"), []byte("\ufeff" + utf8Detail)}),
			rows: 5, summary: &reconcile.Summary{Count: 5, Amount: 13601, Refunds: 601, Fees: 78},
		},
		{
			name: "no footer, no summary",
			zip: zipOf(t, [2][]byte{[]byte("d.csv"), []byte(strings.Join(
				strings.Split(utf8Detail, "\r\n")[:6], "\n"))}),
			rows: 1,
		},
		{name: "no detail file", zip: zipOf(t, [2][]byte{[]byte("s.csv"), summary}), err: "no detail file"},
		{name: "not a zip", zip: detail, err: "not a zip"},
		{
			name: "bad amount",
			zip:  zipOf(t, [2][]byte{[]byte("d.csv"), []byte(strings.Replace(utf8Detail, ",18.00,18.00,", ",18.0.0,18.00,", 1))}),
			err:  "订单金额",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := alipay.ParseBillZip(billDay, tc.zip)
			if tc.err != "" {
				var pe *reconcile.ParseError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want a ParseError with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Rows) != tc.rows {
				t.Errorf("rows %d, want %d", len(b.Rows), tc.rows)
			}
			if (b.Summary == nil) != (tc.summary == nil) || (b.Summary != nil && *b.Summary != *tc.summary) {
				t.Errorf("summary %+v, want %+v", b.Summary, tc.summary)
			}
		})
	}
}

// TestDownloadBill runs alipay.data.dataservice.bill.downloadurl.query and
// the zip download against the simulator.
func TestDownloadBill(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	ctx := context.Background()
	today := reconcile.DateOf(time.Now())

	_, err := e.pay.DownloadBill(ctx, today)
	var nr *reconcile.NotReadyError
	if !errors.As(err, &nr) || nr.Platform != alipay.Platform || !nr.RetryAt.Equal(today.ReadyAt()) {
		t.Fatalf("before 10:00 tomorrow: %v", err)
	}
	if err := e.sim.MarkBillReady(e.cfg.ID, today.String()); err != nil {
		t.Fatal(err)
	}
	b, err := e.pay.DownloadBill(ctx, today)
	if err != nil || len(b.Rows) != 0 || b.Summary == nil || *b.Summary != (reconcile.Summary{}) {
		t.Fatalf("empty day: %+v, %v", b, err)
	}

	nos := []string{"bill_" + randomNo(), "bill_" + randomNo()}
	for i, no := range nos {
		e.prepay(t, no, int64(1000*(i+1)), "dora")
		if _, err := e.sim.Pay(ctx, e.sbApp, no, sandbox.Faults{Drop: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.pay.Refund(ctx, orders.RefundRequest{OutTradeNo: nos[1], OutRefundNo: "r_" + nos[1], Amount: 250, Total: 2000}); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.DivergeBill(e.cfg.ID, today.String(), sandbox.BillDivergence{
		Amounts: map[string]int64{nos[0]: 999}, Extra: []sandbox.BillExtraPayment{{OutTradeNo: "stranger", Amount: 42}},
	}); err != nil {
		t.Fatal(err)
	}
	b, err = e.pay.DownloadBill(ctx, today)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]reconcile.Row{}
	for _, r := range b.Rows {
		got[string(r.Kind)+":"+r.OutTradeNo] = r
	}
	if len(b.Rows) != 4 || got["payment:"+nos[0]].Amount != 999 || got["payment:"+nos[1]].Amount != 2000 ||
		got["refund:"+nos[1]].OutRefundNo != "r_"+nos[1] || got["refund:"+nos[1]].Amount != 250 || got["payment:stranger"].Amount != 42 {
		t.Fatalf("rows %+v", got)
	}
	if b.Summary == nil || *b.Summary != b.Computed() {
		t.Errorf("summary %+v, rows add up to %+v", b.Summary, b.Computed())
	}

	_, err = e.pay.DownloadBill(ctx, today.AddDays(3))
	if pe, ok := adapters.AsPlatformError(err); !ok || pe.Reason != adapters.ReasonInvalidRequest {
		t.Errorf("a future day: %v", err)
	}
}

func FuzzParseBillDetail(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := alipay.ParseBillDetail(billDay, data)
		if !testenv.ParsedBill(t, b, err) {
			return
		}
		for _, r := range b.Rows {
			if r.Amount < 0 || r.Settled < 0 {
				t.Fatalf("row %+v", r)
			}
		}
	})
}

func FuzzParseBillZip(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := alipay.ParseBillZip(billDay, data)
		testenv.ParsedBill(t, b, err)
	})
}

func randomNo() string {
	return strings.ReplaceAll(time.Now().Format("150405.000000000"), ".", "")
}
