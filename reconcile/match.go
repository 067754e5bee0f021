package reconcile

import (
	"fmt"

	"github.com/minigate/minigate/internal/money"
	"github.com/minigate/minigate/orders"
)

// Kind classifies a discrepancy.
type Kind string

// Discrepancy kinds. Each applies to payments and to refunds (Subject).
const (
	// MissingLocal: the platform took (or refunded) the money; minigate has
	// no paid order (no succeeded refund) for it.
	MissingLocal Kind = "missing_local"
	// MissingPlatform: minigate recorded a payment (refund) that day that
	// the bill does not list.
	MissingPlatform Kind = "missing_platform"
	// AmountMismatch: both sides have it, for different amounts.
	AmountMismatch Kind = "amount_mismatch"
	// StatusMismatch: the bill shows money moved for an order (refund)
	// minigate has closed or failed.
	StatusMismatch Kind = "status_mismatch"
	// TotalsMismatch: the bill's summary row disagrees with its own rows.
	TotalsMismatch Kind = "totals_mismatch"
)

// Subject is what a discrepancy is about.
type Subject string

// Subjects.
const (
	SubjectPayment Subject = "payment"
	SubjectRefund  Subject = "refund"
	SubjectTotals  Subject = "totals"
)

// Action is what minigate did about a discrepancy.
type Action string

// Actions.
const (
	// ActionNone: nothing could be done automatically; see the note.
	ActionNone Action = "none"
	// ActionRecovered: the platform confirmed it and minigate applied it
	// (order paid, refund succeeded), with source reconcile.
	ActionRecovered Action = "recovered"
	// ActionFlagged: the order was flagged for review (needs_review).
	ActionFlagged Action = "flagged"
)

// Discrepancy is one thing the bill and minigate's books disagree about,
// and what minigate did about it. Amounts are fen.
type Discrepancy struct {
	Kind          Kind    `json:"kind" db:"kind"`
	Subject       Subject `json:"subject" db:"subject"`
	OutTradeNo    string  `json:"out_trade_no,omitempty" db:"out_trade_no"`
	OutRefundNo   string  `json:"out_refund_no,omitempty" db:"out_refund_no"`
	TransactionID string  `json:"transaction_id,omitempty" db:"transaction_id"`
	OrderID       string  `json:"order_id,omitempty" db:"order_id"`
	// Field names the total of a totals_mismatch: count, amount, refunds
	// or fees.
	Field string `json:"field,omitempty" db:"field"`
	// BillAmount is the bill's amount (for totals: the summary row's);
	// LocalAmount minigate's (for totals: the sum of the bill's rows).
	BillAmount  *int64 `json:"bill_amount" db:"bill_amount"`
	LocalAmount *int64 `json:"local_amount" db:"local_amount"`
	BillStatus  string `json:"bill_status,omitempty" db:"bill_status"`
	LocalStatus string `json:"local_status,omitempty" db:"local_status"`
	Action      Action `json:"action" db:"action"`
	Note        string `json:"note" db:"note"`

	// row is the bill row the discrepancy is about, when there is one.
	row *Row
}

// Key identifies a discrepancy across runs of the same day.
type Key struct {
	Kind        Kind    `json:"kind"`
	Subject     Subject `json:"subject"`
	OutTradeNo  string  `json:"out_trade_no,omitempty"`
	OutRefundNo string  `json:"out_refund_no,omitempty"`
	Field       string  `json:"field,omitempty"`
}

// Key returns d's identity.
func (d *Discrepancy) Key() Key {
	return Key{Kind: d.Kind, Subject: d.Subject, OutTradeNo: d.OutTradeNo, OutRefundNo: d.OutRefundNo, Field: d.Field}
}

// Side is one side's totals for the day. Amounts are fen.
type Side struct {
	Payments      int   `json:"payments"`
	PaymentAmount int64 `json:"payment_amount"`
	Refunds       int   `json:"refunds"`
	RefundAmount  int64 `json:"refund_amount"`
}

// Totals are a run's figures: the bill's rows, the bill's own summary, the
// books, and how many rows matched.
type Totals struct {
	Bill Side `json:"bill"`
	// BillFees is the net fee of the bill's rows.
	BillFees int64    `json:"bill_fees"`
	Summary  *Summary `json:"summary"`
	Local    Side     `json:"local"`
	Matched  int      `json:"matched"`
}

// Books is minigate's view of one app's business day, as Match needs it.
type Books struct {
	// Paid are the orders paid that day.
	Paid []orders.Order
	// Refunds are the refunds that succeeded that day.
	Refunds []orders.RefundOfOrder
	// Orders are the orders the bill names, whenever they were paid.
	Orders map[string]*orders.Order
	// RefundsByNo are the refunds the bill names.
	RefundsByNo map[string]*orders.RefundOfOrder
}

// Match compares a bill with the books and classifies every difference.
// Payments are matched by out_trade_no, refunds by out_refund_no; a bill
// row matches when minigate has it in the same state (paid, or refund
// succeeded) for the same amount. The discrepancies come without actions:
// Service.Run decides those.
func Match(b *Bill, books Books) (Totals, []Discrepancy) {
	var (
		t     Totals
		out   []Discrepancy
		payNo = map[string]bool{}
		refNo = map[string]bool{}
	)
	for i := range b.Rows {
		r := &b.Rows[i]
		t.BillFees += r.Fee
		if r.Kind == KindRefund {
			t.Bill.Refunds++
			t.Bill.RefundAmount += r.Amount
			if refNo[r.OutRefundNo] {
				continue
			}
			refNo[r.OutRefundNo] = true
			if d, ok := matchRefund(r, books); ok {
				out = append(out, d)
			} else {
				t.Matched++
			}
			continue
		}
		t.Bill.Payments++
		t.Bill.PaymentAmount += r.Amount
		if payNo[r.OutTradeNo] {
			continue
		}
		payNo[r.OutTradeNo] = true
		if d, ok := matchPayment(r, books.Orders[r.OutTradeNo]); ok {
			out = append(out, d)
		} else {
			t.Matched++
		}
	}
	for i := range books.Paid {
		o := &books.Paid[i]
		t.Local.Payments++
		t.Local.PaymentAmount += o.Amount
		if !payNo[o.OutTradeNo] {
			out = append(out, Discrepancy{
				Kind: MissingPlatform, Subject: SubjectPayment, OutTradeNo: o.OutTradeNo, OrderID: o.ID,
				TransactionID: o.TransactionID, LocalAmount: ptr(o.Amount), LocalStatus: string(o.Status),
			})
		}
	}
	for i := range books.Refunds {
		r := &books.Refunds[i]
		t.Local.Refunds++
		t.Local.RefundAmount += r.Amount
		if !refNo[r.OutRefundNo] {
			out = append(out, Discrepancy{
				Kind: MissingPlatform, Subject: SubjectRefund, OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo,
				OrderID: r.OrderID, LocalAmount: ptr(r.Amount), LocalStatus: string(r.Status),
			})
		}
	}
	if b.Summary != nil {
		s := *b.Summary
		t.Summary = &s
		out = append(out, checkTotals(s, b.Computed())...)
	}
	return t, out
}

func matchPayment(r *Row, o *orders.Order) (Discrepancy, bool) {
	var kind Kind
	switch {
	case o == nil || o.Status.Unpaid():
		kind = MissingLocal
	case !o.Status.PaidOrLater():
		kind = StatusMismatch
	case o.Amount != r.Amount:
		kind = AmountMismatch
	default:
		return Discrepancy{}, false
	}
	d := Discrepancy{
		Kind: kind, Subject: SubjectPayment, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
		BillAmount: ptr(r.Amount), BillStatus: r.Status, row: r,
	}
	if o != nil {
		d.OrderID, d.LocalAmount, d.LocalStatus = o.ID, ptr(o.Amount), string(o.Status)
	}
	return d, true
}

func matchRefund(r *Row, books Books) (Discrepancy, bool) {
	lr := books.RefundsByNo[r.OutRefundNo]
	var kind Kind
	switch {
	case lr == nil || lr.OutTradeNo != r.OutTradeNo || lr.Status == orders.RefundStatusPending:
		kind = MissingLocal
	case lr.Status == orders.RefundStatusFailed:
		kind = StatusMismatch
	case lr.Amount != r.Amount:
		kind = AmountMismatch
	default:
		return Discrepancy{}, false
	}
	d := Discrepancy{
		Kind: kind, Subject: SubjectRefund, OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo,
		TransactionID: r.TransactionID, BillAmount: ptr(r.Amount), BillStatus: r.Status, row: r,
	}
	if o := books.Orders[r.OutTradeNo]; o != nil {
		d.OrderID = o.ID
	}
	switch {
	case lr == nil:
	case lr.OutTradeNo != r.OutTradeNo:
		// The same refund number on another order is not this refund.
		d.Note = fmt.Sprintf("minigate's refund %s belongs to order %s", lr.OutRefundNo, lr.OutTradeNo)
	default:
		d.OrderID, d.LocalAmount, d.LocalStatus = lr.OrderID, ptr(lr.Amount), string(lr.Status)
	}
	return d, true
}

// checkTotals compares the bill's summary row with the sums of its rows.
func checkTotals(sum, rows Summary) []Discrepancy {
	var out []Discrepancy
	add := func(field string, stated, computed int64, format func(int64) string) {
		if stated == computed {
			return
		}
		out = append(out, Discrepancy{
			Kind: TotalsMismatch, Subject: SubjectTotals, Field: field,
			BillAmount: ptr(stated), LocalAmount: ptr(computed), Action: ActionNone,
			Note: fmt.Sprintf("the bill's summary row states %s, its rows add up to %s", format(stated), format(computed)),
		})
	}
	count := func(v int64) string { return fmt.Sprintf("%d rows", v) }
	yuan := func(v int64) string { return "¥" + money.FormatYuan(v) }
	add("count", int64(sum.Count), int64(rows.Count), count)
	add("amount", sum.Amount, rows.Amount, yuan)
	add("refunds", sum.Refunds, rows.Refunds, yuan)
	add("fees", sum.Fees, rows.Fees, yuan)
	return out
}

func ptr(v int64) *int64 { return &v }
