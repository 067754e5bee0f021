package reconcile

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/width"

	"github.com/minigate/minigate/internal/money"
)

// Report is one reconciliation run: what was compared, what differed and
// what minigate did about it.
type Report struct {
	ID            string        `json:"id"`
	App           string        `json:"app"`
	Platform      string        `json:"platform"`
	Date          Date          `json:"date"`
	Status        Status        `json:"status"`
	Trigger       Trigger       `json:"trigger"`
	StartedAt     time.Time     `json:"started_at"`
	FinishedAt    time.Time     `json:"finished_at"`
	Totals        Totals        `json:"totals"`
	Discrepancies []Discrepancy `json:"discrepancies"`
	// PreviousRunID is the run of the same app and day before this one.
	PreviousRunID *string `json:"previous_run_id"`
	// Diff compares this run's discrepancies with the previous run's.
	Diff *Diff `json:"diff,omitempty"`
}

// Diff is how a run's discrepancies differ from the previous run's.
type Diff struct {
	New       []Key `json:"new"`
	Resolved  []Key `json:"resolved"`
	Unchanged int   `json:"unchanged"`
}

// Formats WriteReport renders.
const (
	FormatTable = "table"
	FormatCSV   = "csv"
	FormatJSON  = "json"
)

// WriteReport renders rep in format (table, csv or json).
func WriteReport(w io.Writer, rep *Report, format string) error {
	switch format {
	case FormatTable, "":
		return writeTable(w, rep)
	case FormatCSV:
		return writeCSV(w, rep)
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return fmt.Errorf("reconcile: unknown format %q (table, csv or json)", format)
}

// csvHeader is the CSV format's header: one row per discrepancy, amounts
// in fen.
var csvHeader = []string{
	"run_id", "app", "date", "kind", "subject", "out_trade_no", "out_refund_no", "transaction_id", "order_id",
	"field", "bill_amount", "local_amount", "bill_status", "local_status", "action", "note",
}

func writeCSV(w io.Writer, rep *Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	amount := func(v *int64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatInt(*v, 10)
	}
	for _, d := range rep.Discrepancies {
		if err := cw.Write([]string{
			rep.ID, rep.App, rep.Date.String(), string(d.Kind), string(d.Subject), d.OutTradeNo, d.OutRefundNo,
			d.TransactionID, d.OrderID, d.Field, amount(d.BillAmount), amount(d.LocalAmount), d.BillStatus,
			d.LocalStatus, string(d.Action), d.Note,
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// writeTable renders the report for a person: the run, the totals side by
// side, then one line per discrepancy with what minigate did.
func writeTable(w io.Writer, rep *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Reconciliation %s — app %s (%s), business day %s (Asia/Shanghai)\n",
		rep.ID, rep.App, rep.Platform, rep.Date)
	fmt.Fprintf(&b, "Run by %s at %s\n", rep.Trigger, rep.FinishedAt.In(Zone).Format("2006-01-02 15:04:05 -07:00"))
	result := "everything matches"
	if n := len(rep.Discrepancies); n > 0 {
		result = fmt.Sprintf("%d discrepanc%s", n, map[bool]string{true: "y", false: "ies"}[n == 1])
	}
	fmt.Fprintf(&b, "Result: %s\n", strings.ToUpper(result[:1])+result[1:])
	if rep.PreviousRunID != nil && rep.Diff != nil {
		fmt.Fprintf(&b, "Since run %s: %d new, %d resolved, %d unchanged\n",
			*rep.PreviousRunID, len(rep.Diff.New), len(rep.Diff.Resolved), rep.Diff.Unchanged)
	}
	b.WriteString("\n")

	t := rep.Totals
	rows := [][]string{
		{"", "payments", "amount", "refunds", "refunded", "fees"},
		{"bill (rows)", itoa(t.Bill.Payments), yuan(t.Bill.PaymentAmount), itoa(t.Bill.Refunds), yuan(t.Bill.RefundAmount), yuan(t.BillFees)},
	}
	if s := t.Summary; s != nil {
		rows = append(rows, []string{"bill (summary)", itoa(s.Count) + " rows", yuan(s.Amount), "", yuan(s.Refunds), yuan(s.Fees)})
	} else {
		rows = append(rows, []string{"bill (summary)", "none", "", "", "", ""})
	}
	rows = append(rows,
		[]string{"minigate", itoa(t.Local.Payments), yuan(t.Local.PaymentAmount), itoa(t.Local.Refunds), yuan(t.Local.RefundAmount), ""},
		[]string{"matched", itoa(t.Matched) + " rows", "", "", "", ""},
	)
	writeColumns(&b, rows, "  ", []bool{false, true, true, true, true, true})

	if len(rep.Discrepancies) > 0 {
		b.WriteString("\n")
		lines := [][]string{{"KIND", "SUBJECT", "OUT_TRADE_NO", "OUT_REFUND_NO", "BILL", "MINIGATE", "ACTION", "WHAT MINIGATE DID"}}
		for _, d := range rep.Discrepancies {
			lines = append(lines, []string{
				string(d.Kind), subjectLabel(d), dash(d.OutTradeNo), dash(d.OutRefundNo),
				side(d.BillAmount, d.BillStatus), side(d.LocalAmount, d.LocalStatus), string(d.Action), d.Note,
			})
		}
		writeColumns(&b, lines, "", nil)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func subjectLabel(d Discrepancy) string {
	if d.Subject == SubjectTotals {
		return "totals:" + d.Field
	}
	return string(d.Subject)
}

// side shows one side of a discrepancy: amount and status.
func side(amount *int64, status string) string {
	parts := []string{}
	if amount != nil {
		parts = append(parts, yuan(*amount))
	}
	if status != "" {
		parts = append(parts, status)
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func itoa(n int) string { return strconv.Itoa(n) }

func yuan(fen int64) string { return "¥" + money.FormatYuan(fen) }

// writeColumns lays rows out in columns separated by two spaces, padded by
// display width (East Asian wide characters count as two), indented by
// indent; right marks right-aligned columns. The last column is not padded.
func writeColumns(b *strings.Builder, rows [][]string, indent string, right []bool) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], DisplayWidth(c))
		}
	}
	for _, r := range rows {
		var line strings.Builder
		line.WriteString(indent)
		for i, c := range r {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", widths[i]-DisplayWidth(c))
			switch {
			case i < len(right) && right[i]:
				line.WriteString(pad + c)
			case i == len(r)-1:
				line.WriteString(c)
			default:
				line.WriteString(c + pad)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// DisplayWidth is how many terminal columns s takes: East Asian wide and
// fullwidth characters (汉字, ￥, （）) take two, others one.
func DisplayWidth(s string) int {
	n := 0
	for _, r := range s {
		switch width.LookupRune(r).Kind() {
		case width.EastAsianWide, width.EastAsianFullwidth:
			n += 2
		default:
			n++
		}
	}
	return n
}
