package reconcile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/simplifiedchinese"
)

func TestDate(t *testing.T) {
	t.Parallel()
	d, err := ParseDate("2024-02-29")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Start().Format(time.RFC3339); got != "2024-02-29T00:00:00+08:00" {
		t.Errorf("Start = %s", got)
	}
	if got := d.End().Format(time.RFC3339); got != "2024-03-01T00:00:00+08:00" {
		t.Errorf("End = %s", got)
	}
	if got := d.ReadyAt().Format(time.RFC3339); got != "2024-03-01T10:00:00+08:00" {
		t.Errorf("ReadyAt = %s", got)
	}
	if d.String() != "2024-02-29" || d.Compact() != "20240229" || d.AddDays(1).String() != "2024-03-01" {
		t.Errorf("formats: %s %s %s", d, d.Compact(), d.AddDays(1))
	}
	// 2024-02-29 16:30 UTC is 2024-03-01 00:30 in Shanghai.
	if got := DateOf(time.Date(2024, 2, 29, 16, 30, 0, 0, time.UTC)); got.String() != "2024-03-01" {
		t.Errorf("DateOf = %s", got)
	}
	for _, bad := range []string{"", "2024-2-29", "2023-02-29", "20240229", "2024-02-29T00:00:00Z"} {
		if _, err := ParseDate(bad); err == nil {
			t.Errorf("ParseDate(%q) accepted", bad)
		}
	}
	var back Date
	if err := back.UnmarshalText([]byte("2024-02-29")); err != nil || back != d {
		t.Errorf("UnmarshalText = %v, %v", back, err)
	}
}

func TestNotReady(t *testing.T) {
	t.Parallel()
	d, _ := ParseDate("2024-05-01")
	before := time.Date(2024, 5, 2, 8, 0, 0, 0, Zone)
	if e := NewNotReady("wechatpay", d, before); !e.RetryAt.Equal(d.ReadyAt()) {
		t.Errorf("before the ready time, retry at it: %v", e.RetryAt)
	}
	late := time.Date(2024, 5, 2, 11, 7, 30, 0, Zone)
	e := NewNotReady("wechatpay", d, late)
	if want := time.Date(2024, 5, 2, 11, 37, 0, 0, Zone); !e.RetryAt.Equal(want) {
		t.Errorf("after the ready time, retry in half an hour: %v, want %v", e.RetryAt, want)
	}
	if !errors.Is(e, ErrNotReady) || !strings.Contains(e.Error(), "retry after 2024-05-02 11:37") {
		t.Errorf("error %q", e)
	}
}

func TestParseAmount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0.01", 1, true},
		{"`1.50", 150, true},
		{"12", 1200, true},
		{"-0.50", -50, true},
		{"-0.00", 0, true},
		{"0.0", 0, true},
		{" 3.33\t", 333, true},
		{"100000000.00", 10_000_000_000, true},
		{"1.005", 0, false},
		{"1e3", 0, false},
		{"--1", 0, false},
		{"-", 0, false},
		{"", 0, false},
		{"¥1.00", 0, false},
	} {
		got, err := ParseAmount(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseAmount(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if v, err := ParseAmountOr0("`"); err != nil || v != 0 {
		t.Errorf("ParseAmountOr0 of an empty cell = %d, %v", v, err)
	}
}

func TestDecodeTextAndLines(t *testing.T) {
	t.Parallel()
	gbk, err := simplifiedchinese.GBK.NewEncoder().String("商户订单号,业务类型\r\nA1,交易\r\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"utf-8", "商户订单号,业务类型\nA1,交易\n"},
		{"bom and crlf", "\ufeff商户订单号,业务类型\r\nA1,交易\r\n"},
		{"gbk", gbk},
		{"lone cr", "商户订单号,业务类型\rA1,交易"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text, err := DecodeText([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			lines := Lines(text)
			if len(lines) != 2 || lines[0] != "商户订单号,业务类型" || lines[1] != "A1,交易" {
				t.Fatalf("lines = %q", lines)
			}
		})
	}
	if _, err := DecodeText([]byte{0x81, 0x20}); err == nil {
		t.Error("bytes that are neither UTF-8 nor GBK decoded")
	}
}

func TestHeader(t *testing.T) {
	t.Parallel()
	h := NewHeader([]string{"\ufeff交易时间", "`商户订单号", "订单金额（元）", "交易时间"})
	row := []string{"`2024-01-01 00:00:00", "`A1\t", "1.00"}
	if h.Get(row, "商户订单号") != "A1" || h.Get(row, "交易时间") != "2024-01-01 00:00:00" {
		t.Errorf("Get by name: %q %q", h.Get(row, "商户订单号"), h.Get(row, "交易时间"))
	}
	if h.Get(row, "订单金额(元)", "订单金额（元）") != "1.00" {
		t.Error("fallback name not used")
	}
	if h.Get(row, "退款金额") != "" || h.Get(row[:1], "商户订单号") != "" {
		t.Error("missing column or short row must read as empty")
	}
	if !h.Has("交易时间", "商户订单号") || h.Has("交易时间", "退款金额") {
		t.Error("Has")
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2024, 3, 1, 9, 5, 7, 0, Zone)
	for _, in := range []string{"2024-03-01 09:05:07", "`2024-03-01 09：05：07", "2024/03/01 09:05:07", "20240301090507"} {
		got, err := ParseTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseTime("yesterday"); err == nil {
		t.Error("nonsense time accepted")
	}
}

func TestBillComputed(t *testing.T) {
	t.Parallel()
	b := Bill{Rows: []Row{
		{Kind: KindPayment, Amount: 100, Settled: 90, Fee: 1},
		{Kind: KindPayment, Amount: 200, Settled: 200, Fee: 1},
		{Kind: KindRefund, Amount: 50, Settled: 50, Fee: -1},
	}}
	if got := b.Computed(); got != (Summary{Count: 3, Amount: 290, Refunds: 50, Fees: 1}) {
		t.Errorf("Computed = %+v", got)
	}
}

func TestDaily(t *testing.T) {
	t.Parallel()
	d, err := ParseDaily("10:30")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ now, want time.Time }{
		{time.Date(2024, 5, 1, 9, 0, 0, 0, Zone), time.Date(2024, 5, 1, 10, 30, 0, 0, Zone)},
		{time.Date(2024, 5, 1, 10, 30, 0, 0, Zone), time.Date(2024, 5, 2, 10, 30, 0, 0, Zone)},
		{time.Date(2024, 5, 1, 23, 0, 0, 0, time.UTC), time.Date(2024, 5, 2, 10, 30, 0, 0, Zone)}, // 07:00 in Shanghai
		{time.Date(2024, 12, 31, 11, 0, 0, 0, Zone), time.Date(2025, 1, 1, 10, 30, 0, 0, Zone)},
	} {
		if got := d.Next(tc.now); !got.Equal(tc.want) {
			t.Errorf("Next(%v) = %v, want %v", tc.now, got, tc.want)
		}
	}
	for _, bad := range []string{"", "25:00", "10:60", "1030"} {
		if _, err := ParseDaily(bad); err == nil {
			t.Errorf("ParseDaily(%q) accepted", bad)
		}
	}
}
