package sandbox

import (
	"testing"
	"time"
)

func TestBillReadiness(t *testing.T) {
	t.Parallel()
	st := newBillState()
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, wechatPayZone)
	for _, tc := range []struct {
		now  time.Time
		want billReadiness
	}{
		{day.Add(-time.Minute), billOutOfRange},
		{day.Add(23 * time.Hour), billNotReady},
		{day.Add(33*time.Hour + 59*time.Minute), billNotReady},
		{day.Add(34 * time.Hour), billReady},
		{day.Add(100 * 24 * time.Hour), billOutOfRange},
	} {
		if got, _ := st.readiness("wechatpay:1", day, tc.now); got != tc.want {
			t.Errorf("at %v: %v, want %v", tc.now, got, tc.want)
		}
	}
	st.mu.Lock()
	st.day("wechatpay:1", day).ready = true
	st.mu.Unlock()
	if got, _ := st.readiness("wechatpay:1", day, day.Add(time.Hour)); got != billReady {
		t.Error("a bill marked ready is ready at once")
	}
	if got, _ := st.readiness("wechatpay:2", day, day.Add(time.Hour)); got != billNotReady {
		t.Error("marking one merchant's bill ready marked another's")
	}
}

func TestBillDivergencesAndFees(t *testing.T) {
	t.Parallel()
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, wechatPayZone)
	rows := []simBillRow{
		{at: day.Add(time.Hour), outTradeNo: "A", total: 1000},
		{at: day.Add(2 * time.Hour), outTradeNo: "B", total: 83},
		{at: day.Add(3 * time.Hour), outTradeNo: "B", refund: true, refundAmount: 83},
		{at: day.Add(13 * time.Hour), outTradeNo: "C", total: 250},
	}
	d := billDay{omit: map[string]bool{"B": true}, amounts: map[string]int64{"C": 1}, extra: []BillExtraPayment{{OutTradeNo: "X", Amount: 9}}}
	got := applyDivergences(rows, d, day, func(time.Time) string { return "T" })
	if len(got) != 3 || got[0].outTradeNo != "A" || got[1].outTradeNo != "X" || got[1].transactionID != "T" ||
		got[2].outTradeNo != "C" || got[2].total != 1 {
		t.Fatalf("rows %+v", got)
	}
	for _, tc := range []struct {
		row  simBillRow
		want int64
	}{
		{simBillRow{total: 1000}, 6},
		{simBillRow{total: 83}, 0}, // 0.498 fen
		{simBillRow{total: 84}, 1}, // 0.504 fen
		{simBillRow{total: 1}, 0},
		{simBillRow{refund: true, refundAmount: 1000}, -6},
	} {
		if got := tc.row.fee(); got != tc.want {
			t.Errorf("fee of %+v = %d, want %d", tc.row, got, tc.want)
		}
	}
}
