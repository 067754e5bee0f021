// Package reconcile compares a payment platform's daily bill with the
// orders and refunds minigate recorded for the same business day, stores
// every run and what differed, and acts on what it can: a payment the
// platform took whose notification minigate never received is confirmed
// with a query and applied (source reconcile); anything else that differs
// is flagged for review.
//
// Adapters (adapters/wechat, adapters/alipay, adapters/qq) implement
// BillSource: they download the platform's bill and normalise its rows.
// This file holds the normalised bill and the small text helpers the
// adapters' parsers share.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Zone is the platforms' business-day time zone, Asia/Shanghai (China has
// had no daylight saving time since 1991, so a fixed zone is exact and does
// not depend on the host's tz database).
var Zone = time.FixedZone("CST", 8*3600)

// BillReadyHour is when, Asia/Shanghai time on the next day, the platforms
// have the previous day's bill ready (WeChat Pay and QQ wallet start at
// 09:00 and advise 10:00).
const BillReadyHour = 10

// Date is a business day in Asia/Shanghai.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// ParseDate parses "YYYY-MM-DD".
func ParseDate(s string) (Date, error) {
	t, err := time.ParseInLocation(time.DateOnly, s, Zone)
	if err != nil {
		return Date{}, fmt.Errorf("reconcile: date %q: want YYYY-MM-DD", s)
	}
	return DateOf(t), nil
}

// DateOf is the business day t falls on.
func DateOf(t time.Time) Date {
	y, m, d := t.In(Zone).Date()
	return Date{y, m, d}
}

// String formats d as "YYYY-MM-DD".
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// Compact formats d as "YYYYMMDD" (QQ wallet, WeChat Pay v2, file names).
func (d Date) Compact() string { return fmt.Sprintf("%04d%02d%02d", d.Year, d.Month, d.Day) }

// IsZero reports whether d is the zero Date.
func (d Date) IsZero() bool { return d == Date{} }

// Start is 00:00 of d in Asia/Shanghai.
func (d Date) Start() time.Time { return time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, Zone) }

// End is 00:00 of the next day: d covers [Start, End).
func (d Date) End() time.Time { return d.Start().AddDate(0, 0, 1) }

// AddDays returns the day n days after d.
func (d Date) AddDays(n int) Date { return DateOf(d.Start().AddDate(0, 0, n)) }

// ReadyAt is when the platforms have d's bill ready: BillReadyHour on the
// next day.
func (d Date) ReadyAt() time.Time { return d.End().Add(BillReadyHour * time.Hour) }

// MarshalText formats d as "YYYY-MM-DD".
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses "YYYY-MM-DD".
func (d *Date) UnmarshalText(b []byte) error {
	p, err := ParseDate(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// RowKind says whether a bill row is a payment or a refund.
type RowKind string

// Row kinds.
const (
	KindPayment RowKind = "payment"
	KindRefund  RowKind = "refund"
)

// Row is one normalised bill row. Amounts are fen.
type Row struct {
	Kind          RowKind `json:"kind"`
	OutTradeNo    string  `json:"out_trade_no"`
	TransactionID string  `json:"transaction_id,omitempty"`
	OutRefundNo   string  `json:"out_refund_no,omitempty"`
	RefundID      string  `json:"refund_id,omitempty"`
	// Amount is what minigate compares with its books: the order total of
	// a payment, the refunded amount of a refund (positive).
	Amount int64 `json:"amount"`
	// Settled is the amount the bill's summary adds up (WeChat Pay's
	// 应结订单金额 / 退款金额, Alipay's 商家实收, QQ wallet's 商户应收金额 /
	// 退款金额); positive for refunds too. It differs from Amount only when
	// coupons or discounts are involved.
	Settled int64 `json:"settled"`
	// Fee is the platform's fee, as a cost to the merchant: positive on
	// payments, negative when a refund returns it.
	Fee int64 `json:"fee"`
	// Status is the platform's own status text (SUCCESS, REFUND, 交易, …).
	Status string    `json:"status,omitempty"`
	Time   time.Time `json:"time"`
}

// Summary is a bill's own totals, as its summary row states them.
type Summary struct {
	// Count is the number of detail rows (payments and refunds).
	Count int `json:"count"`
	// Amount is the total Settled of the payment rows.
	Amount int64 `json:"amount"`
	// Refunds is the total Settled of the refund rows (positive).
	Refunds int64 `json:"refunds"`
	// Fees is the net fee (payments' fees less refunds' returned fees).
	Fees int64 `json:"fees"`
}

// Bill is one platform's bill for one business day, normalised.
type Bill struct {
	Platform string
	Date     Date
	Rows     []Row
	// Summary is nil when the bill has no summary (an empty day on some
	// platforms, or an older layout).
	Summary *Summary
}

// Computed returns the totals of b's detail rows, comparable with Summary.
func (b *Bill) Computed() Summary {
	s := Summary{Count: len(b.Rows)}
	for _, r := range b.Rows {
		if r.Kind == KindRefund {
			s.Refunds += r.Settled
		} else {
			s.Amount += r.Settled
		}
		s.Fees += r.Fee
	}
	return s
}

// BillSource downloads a platform's daily trade bill. An empty day is an
// empty Bill, not an error; a bill the platform has not generated yet is a
// *NotReadyError; other failures are *adapters.PlatformError.
type BillSource interface {
	DownloadBill(ctx context.Context, date Date) (*Bill, error)
}

// ErrNotReady matches every *NotReadyError with errors.Is.
var ErrNotReady = errors.New("reconcile: bill not ready")

// NotReadyError says the platform has not generated the day's bill yet.
type NotReadyError struct {
	Platform string
	Date     Date
	// RetryAt is when to try again.
	RetryAt time.Time
}

// NewNotReady returns the error for date's bill at platform as of now:
// retry at the ready time, or in half an hour when that has passed (a
// platform running late).
func NewNotReady(platform string, date Date, now time.Time) *NotReadyError {
	at := date.ReadyAt()
	if !now.Before(at) {
		at = now.Add(30 * time.Minute).Truncate(time.Minute)
	}
	return &NotReadyError{Platform: platform, Date: date, RetryAt: at}
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("%s has not generated the bill for %s yet: retry after %s (Asia/Shanghai)",
		e.Platform, e.Date, e.RetryAt.In(Zone).Format("2006-01-02 15:04"))
}

// Is makes errors.Is(err, ErrNotReady) true.
func (e *NotReadyError) Is(target error) bool { return target == ErrNotReady }

// ParseError is a bill that does not follow the platform's layout.
type ParseError struct {
	Platform string
	Line     int // 1-based line (or file entry) of the problem; 0 when not known
	Msg      string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s bill: line %d: %s", e.Platform, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s bill: %s", e.Platform, e.Msg)
}

// CleanCell trims what bills put around values: surrounding spaces, the
// backtick WeChat Pay and QQ wallet prefix every field with (so spreadsheets
// keep long numbers as text), the TAB Alipay appends to ids for the same
// reason, and a stray quote pair.
func CleanCell(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "`")
	s = strings.Trim(s, "\t \"")
	return strings.TrimSpace(s)
}

// Header maps a table's column names to their positions, so rows are read
// by name and bills with fewer (older layouts) or more columns still parse.
type Header map[string]int

// NewHeader indexes the cleaned names of a header row; a repeated name
// keeps its first position.
func NewHeader(fields []string) Header {
	h := make(Header, len(fields))
	for i, f := range fields {
		name := CleanCell(strings.TrimPrefix(f, "\ufeff"))
		if _, dup := h[name]; !dup && name != "" {
			h[name] = i
		}
	}
	return h
}

// Has reports whether the header has every one of names.
func (h Header) Has(names ...string) bool {
	for _, n := range names {
		if _, ok := h[n]; !ok {
			return false
		}
	}
	return true
}

// Get returns the cleaned cell of the first of names that the header has
// and the row is long enough for; "" otherwise.
func (h Header) Get(row []string, names ...string) string {
	for _, n := range names {
		if i, ok := h[n]; ok && i < len(row) {
			return CleanCell(row[i])
		}
	}
	return ""
}
