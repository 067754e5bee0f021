package reconcile

import (
	"fmt"
	"slices"
	"testing"

	"github.com/minigate/minigate/orders"
)

func pay(no string, amount int64) Row {
	return Row{Kind: KindPayment, OutTradeNo: no, Amount: amount, Settled: amount, Status: "SUCCESS"}
}

func refund(no, refundNo string, amount int64) Row {
	return Row{Kind: KindRefund, OutTradeNo: no, OutRefundNo: refundNo, Amount: amount, Settled: amount, Status: "REFUND"}
}

func order(no string, amount int64, st orders.Status) orders.Order {
	return orders.Order{ID: "ord_" + no, OutTradeNo: no, Amount: amount, Status: st}
}

func storedRefund(no, refundNo string, amount int64, st orders.RefundStatus) orders.RefundOfOrder {
	return orders.RefundOfOrder{
		StoredRefund: orders.StoredRefund{ID: "ref_" + refundNo, OrderID: "ord_" + no, OutRefundNo: refundNo, Amount: amount, Status: st},
		OutTradeNo:   no,
	}
}

// books builds the books Match sees: paid are paid that day, others are
// orders the bill names from other days or unpaid ones.
func books(paid []orders.Order, others []orders.Order, refunds []orders.RefundOfOrder, otherRefunds []orders.RefundOfOrder) Books {
	b := Books{Paid: paid, Orders: map[string]*orders.Order{}, RefundsByNo: map[string]*orders.RefundOfOrder{}}
	for _, list := range [][]orders.Order{paid, others} {
		for i := range list {
			b.Orders[list[i].OutTradeNo] = &list[i]
		}
	}
	for _, r := range refunds {
		if r.Status == orders.RefundStatusSucceeded {
			b.Refunds = append(b.Refunds, r)
		}
	}
	for _, list := range [][]orders.RefundOfOrder{refunds, otherRefunds} {
		for i := range list {
			b.RefundsByNo[list[i].OutRefundNo] = &list[i]
		}
	}
	return b
}

func TestMatch(t *testing.T) {
	t.Parallel()
	type want struct {
		kind    Kind
		subject Subject
		no      string
	}
	for _, tc := range []struct {
		name    string
		rows    []Row
		books   Books
		matched int
		want    []want
	}{
		{
			name:    "everything matches",
			rows:    []Row{pay("A", 100), pay("B", 200), refund("A", "RA", 30)},
			books:   books([]orders.Order{order("A", 100, orders.StatusPartiallyRefunded), order("B", 200, orders.StatusPaid)}, nil, []orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusSucceeded)}, nil),
			matched: 3,
		},
		{
			name:    "lost notification: the order is still paying",
			rows:    []Row{pay("A", 100), pay("B", 200)},
			books:   books([]orders.Order{order("A", 100, orders.StatusPaid)}, []orders.Order{order("B", 200, orders.StatusPaying)}, nil, nil),
			matched: 1,
			want:    []want{{MissingLocal, SubjectPayment, "B"}},
		},
		{
			name:  "a payment minigate never created",
			rows:  []Row{pay("X", 100)},
			books: books(nil, nil, nil, nil),
			want:  []want{{MissingLocal, SubjectPayment, "X"}},
		},
		{
			name:  "paid locally, absent from the bill",
			rows:  nil,
			books: books([]orders.Order{order("A", 100, orders.StatusPaid)}, nil, nil, nil),
			want:  []want{{MissingPlatform, SubjectPayment, "A"}},
		},
		{
			name:  "amounts differ",
			rows:  []Row{pay("A", 101)},
			books: books([]orders.Order{order("A", 100, orders.StatusPaid)}, nil, nil, nil),
			want:  []want{{AmountMismatch, SubjectPayment, "A"}},
		},
		{
			name:  "money for a closed order",
			rows:  []Row{pay("A", 100)},
			books: books(nil, []orders.Order{order("A", 100, orders.StatusClosed)}, nil, nil),
			want:  []want{{StatusMismatch, SubjectPayment, "A"}},
		},
		{
			name:    "paid on another day still matches by out_trade_no",
			rows:    []Row{pay("A", 100)},
			books:   books(nil, []orders.Order{order("A", 100, orders.StatusPaid)}, nil, nil),
			matched: 1,
		},
		{
			name:    "refund still pending locally",
			rows:    []Row{refund("A", "RA", 30)},
			books:   books(nil, []orders.Order{order("A", 100, orders.StatusPaid)}, nil, []orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusPending)}),
			matched: 0,
			want:    []want{{MissingLocal, SubjectRefund, "A"}},
		},
		{
			name:  "refund minigate did not make",
			rows:  []Row{refund("A", "CONSOLE", 30)},
			books: books(nil, []orders.Order{order("A", 100, orders.StatusPaid)}, nil, nil),
			want:  []want{{MissingLocal, SubjectRefund, "A"}},
		},
		{
			name:  "refund failed locally",
			rows:  []Row{refund("A", "RA", 30)},
			books: books(nil, []orders.Order{order("A", 100, orders.StatusPaid)}, nil, []orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusFailed)}),
			want:  []want{{StatusMismatch, SubjectRefund, "A"}},
		},
		{
			name:  "refund amounts differ",
			rows:  []Row{refund("A", "RA", 31)},
			books: books(nil, []orders.Order{order("A", 100, orders.StatusPartiallyRefunded)}, nil, []orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusSucceeded)}),
			want:  []want{{AmountMismatch, SubjectRefund, "A"}},
		},
		{
			name:  "refund number of another order",
			rows:  []Row{refund("B", "RA", 30)},
			books: books(nil, []orders.Order{order("B", 100, orders.StatusPaid)}, nil, []orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusSucceeded)}),
			want:  []want{{MissingLocal, SubjectRefund, "B"}},
		},
		{
			name:  "refund succeeded locally, absent from the bill",
			books: books(nil, nil, []orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusSucceeded)}, nil),
			want:  []want{{MissingPlatform, SubjectRefund, "A"}},
		},
		{
			name:    "a row listed twice counts once",
			rows:    []Row{pay("A", 100), pay("A", 100)},
			books:   books([]orders.Order{order("A", 100, orders.StatusPaid)}, nil, nil, nil),
			matched: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			totals, got := Match(&Bill{Rows: tc.rows}, tc.books)
			if totals.Matched != tc.matched {
				t.Errorf("matched %d, want %d", totals.Matched, tc.matched)
			}
			var kinds []want
			for _, d := range got {
				kinds = append(kinds, want{d.Kind, d.Subject, d.OutTradeNo})
			}
			if !slices.Equal(kinds, tc.want) {
				t.Errorf("discrepancies %v, want %v", kinds, tc.want)
			}
			if totals.Summary != nil {
				t.Error("no summary in the bill, but one in the totals")
			}
		})
	}
}

func TestMatchTotals(t *testing.T) {
	t.Parallel()
	rows := []Row{pay("A", 100), refund("A", "RA", 30)}
	rows[0].Fee, rows[1].Fee = 1, -1
	bk := books([]orders.Order{order("A", 100, orders.StatusPartiallyRefunded)}, nil,
		[]orders.RefundOfOrder{storedRefund("A", "RA", 30, orders.RefundStatusSucceeded)}, nil)

	totals, got := Match(&Bill{Rows: rows, Summary: &Summary{Count: 2, Amount: 100, Refunds: 30, Fees: 0}}, bk)
	if len(got) != 0 || totals.Summary == nil || totals.Matched != 2 {
		t.Fatalf("a summary that agrees: %+v, %+v", got, totals)
	}
	if totals.Bill != (Side{Payments: 1, PaymentAmount: 100, Refunds: 1, RefundAmount: 30}) || totals.Local != totals.Bill {
		t.Errorf("sides: bill %+v, local %+v", totals.Bill, totals.Local)
	}

	_, got = Match(&Bill{Rows: rows, Summary: &Summary{Count: 3, Amount: 100, Refunds: 31, Fees: 2}}, bk)
	var fields []string
	for _, d := range got {
		if d.Kind != TotalsMismatch || d.Subject != SubjectTotals || d.Action != ActionNone {
			t.Errorf("not a totals mismatch: %+v", d)
		}
		fields = append(fields, d.Field)
	}
	if !slices.Equal(fields, []string{"count", "refunds", "fees"}) {
		t.Errorf("mismatched fields %v", fields)
	}
	if *got[1].BillAmount != 31 || *got[1].LocalAmount != 30 || got[1].Note != "the bill's summary row states ¥0.31, its rows add up to ¥0.30" {
		t.Errorf("refunds mismatch: %+v %q", got[1], got[1].Note)
	}
}

func TestDiffRuns(t *testing.T) {
	t.Parallel()
	a := Discrepancy{Kind: MissingLocal, Subject: SubjectPayment, OutTradeNo: "A"}
	b := Discrepancy{Kind: AmountMismatch, Subject: SubjectPayment, OutTradeNo: "B"}
	c := Discrepancy{Kind: MissingLocal, Subject: SubjectRefund, OutTradeNo: "B", OutRefundNo: "RB"}
	d := diffRuns([]Discrepancy{a, b}, []Discrepancy{b, c})
	if d.Unchanged != 1 || !slices.Equal(d.New, []Key{c.Key()}) || !slices.Equal(d.Resolved, []Key{a.Key()}) {
		t.Errorf("diff = %+v", d)
	}
	if d := diffRuns([]Discrepancy{a}, nil); len(d.Resolved) != 1 || d.New == nil {
		t.Errorf("all resolved: %+v (New must be an empty list, not null)", d)
	}
}

// BenchmarkMatch compares a day of 10,000 payments and 1,000 refunds.
func BenchmarkMatch(b *testing.B) {
	var (
		rows     []Row
		paid     []orders.Order
		refunded []orders.RefundOfOrder
	)
	for i := range 10000 {
		no := fmt.Sprintf("ORDER%08d", i)
		rows = append(rows, pay(no, 1234))
		paid = append(paid, order(no, 1234, orders.StatusPaid))
		if i%10 == 0 {
			rows = append(rows, refund(no, "R"+no, 100))
			refunded = append(refunded, storedRefund(no, "R"+no, 100, orders.RefundStatusSucceeded))
		}
	}
	bk := books(paid, nil, refunded, nil)
	bill := &Bill{Rows: rows}
	b.ReportAllocs()
	for b.Loop() {
		if t, d := Match(bill, bk); t.Matched != 11000 || len(d) != 0 {
			b.Fatalf("matched %d, %d discrepancies", t.Matched, len(d))
		}
	}
}
