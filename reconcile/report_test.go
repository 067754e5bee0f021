package reconcile

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	prev := "rec_01PREVIOUS"
	return &Report{
		ID: "rec_01EXAMPLE", App: "shop", Platform: "alipay", Date: Date{2024, 5, 1}, Status: StatusDiscrepancies,
		Trigger: TriggerCLI, FinishedAt: time.Date(2024, 5, 2, 10, 31, 0, 0, Zone),
		Totals: Totals{
			Bill:     Side{Payments: 2, PaymentAmount: 300, Refunds: 1, RefundAmount: 50},
			BillFees: 1, Summary: &Summary{Count: 3, Amount: 300, Refunds: 50, Fees: 1},
			Local:   Side{Payments: 1, PaymentAmount: 100, Refunds: 1, RefundAmount: 50},
			Matched: 2,
		},
		Discrepancies: []Discrepancy{
			{Kind: MissingLocal, Subject: SubjectPayment, OutTradeNo: "订单二号", BillAmount: ptr(200), BillStatus: "交易",
				LocalAmount: ptr(200), LocalStatus: "paying", Action: ActionRecovered, Note: "moved paying → paid"},
			{Kind: TotalsMismatch, Subject: SubjectTotals, Field: "fees", BillAmount: ptr(2), LocalAmount: ptr(1), Action: ActionNone, Note: "summary disagrees"},
		},
		PreviousRunID: &prev,
		Diff:          &Diff{New: []Key{{Kind: MissingLocal, Subject: SubjectPayment, OutTradeNo: "订单二号"}}, Resolved: []Key{}, Unchanged: 1},
	}
}

func TestWriteTableLinesUp(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := WriteReport(&buf, sampleReport(), FormatTable); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Reconciliation rec_01EXAMPLE — app shop (alipay), business day 2024-05-01",
		"Result: 2 discrepancies", "Since run rec_01PREVIOUS: 1 new, 0 resolved, 1 unchanged",
		"bill (summary)", "3 rows", "¥3.00", "recovered", "moved paying → paid", "totals:fees",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// In the discrepancy table every column starts at the same display
	// column on every line, wide characters counting two.
	lines := strings.Split(out, "\n")
	var table []string
	for i, l := range lines {
		if strings.HasPrefix(l, "KIND") {
			table = lines[i : i+3]
		}
	}
	if table == nil {
		t.Fatalf("no discrepancy table:\n%s", out)
	}
	col := func(line, cell string) int {
		i := strings.Index(line, cell)
		if i < 0 {
			t.Fatalf("%q not in %q", cell, line)
		}
		return DisplayWidth(line[:i])
	}
	for _, c := range []struct{ header, row1, row2 string }{
		{"SUBJECT", "payment", "totals:fees"},
		{"BILL", "¥2.00 交易", "¥0.02"},
		{"MINIGATE", "¥2.00 paying", "¥0.01"},
		{"ACTION", "recovered", "none"},
	} {
		h, a, b := col(table[0], c.header), col(table[1], c.row1), col(table[2], c.row2)
		if h != a || h != b {
			t.Errorf("column %s starts at %d, %d, %d:\n%s", c.header, h, a, b, strings.Join(table, "\n"))
		}
	}
}

func TestWriteTableMatched(t *testing.T) {
	t.Parallel()
	rep := sampleReport()
	rep.Status, rep.Discrepancies, rep.Totals.Summary = StatusMatched, nil, nil
	var buf bytes.Buffer
	if err := WriteReport(&buf, rep, ""); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "Result: Everything matches") || strings.Contains(out, "KIND") ||
		!strings.Contains(out, "none") {
		t.Errorf("matched report:\n%s", out)
	}
}

func TestWriteCSVAndJSON(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := WriteReport(&buf, sampleReport(), FormatCSV); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0][3] != "kind" || recs[1][5] != "订单二号" || recs[1][10] != "200" || recs[2][9] != "fees" {
		t.Errorf("csv = %q", recs)
	}
	buf.Reset()
	if err := WriteReport(&buf, sampleReport(), FormatJSON); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Date != (Date{2024, 5, 1}) || len(back.Discrepancies) != 2 || *back.Discrepancies[0].BillAmount != 200 ||
		back.Diff.Unchanged != 1 || !strings.Contains(buf.String(), `"date": "2024-05-01"`) {
		t.Errorf("json round trip: %+v\n%s", back, buf.String())
	}
	if err := WriteReport(&buf, sampleReport(), "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestDisplayWidth(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"": 0, "abc": 3, "交易": 4, "¥1.00": 5, "订单金额（元）": 14, "ｱ": 1} {
		if got := DisplayWidth(in); got != want {
			t.Errorf("DisplayWidth(%q) = %d, want %d", in, got, want)
		}
	}
}
