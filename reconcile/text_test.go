package reconcile

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// testLayout reads rows "`no,`amount" and a summary "`count".
var testLayout = BacktickBill{
	Platform: "test", Name: "test bill", Required: []string{"no", "amount"},
	Row: func(h Header, cells []string) (Row, error) {
		amount, err := ParseAmount(h.Get(cells, "amount"))
		if err != nil {
			return Row{}, fmt.Errorf("amount: %w", err)
		}
		return Row{Kind: KindPayment, OutTradeNo: h.Get(cells, "no"), Amount: amount, Settled: amount}, nil
	},
	Summary: func(h Header, cells []string) (*Summary, error) {
		n, err := strconv.Atoi(h.Get(cells, "总交易单数"))
		if err != nil {
			return nil, fmt.Errorf("count: %w", err)
		}
		return &Summary{Count: n}, nil
	},
}

func TestBacktickBillParse(t *testing.T) {
	t.Parallel()
	const head = "no,amount\r\n"
	const sum = "总交易单数\r\n`2\r\n"
	for _, tc := range []struct {
		name    string
		text    string
		rows    []string // out_trade_no of each row
		summary bool
		line    int    // ParseError's line; 0 = no error
		msg     string // in the ParseError
	}{
		{name: "empty file", text: ""},
		{name: "blank lines only", text: "\r\n  \r\n"},
		{name: "rows and summary", text: head + "`A,`1.00\r\n\r\n`B,`2.50\r\n" + sum, rows: []string{"A", "B"}, summary: true},
		{name: "rows without summary", text: head + "`A,`1.00\r\n", rows: []string{"A"}},
		{name: "a comma inside a cell", text: head + "`A,B,`1.00\r\n" + sum, rows: []string{"A,B"}, summary: true},
		{name: "no header", text: "x,y\r\n", line: 1, msg: "no test bill header (no, amount)"},
		{name: "row error names its line", text: "\r\n" + head + "`A,`1.00\r\n\r\n`B,`x\r\n", line: 5, msg: "amount: "},
		{name: "summary without row", text: head + "`A,`1.00\r\n总交易单数\r\n\r\n", line: 5, msg: "summary header without a summary row"},
		{name: "summary error", text: head + "总交易单数\r\n`two\r\n", line: 3, msg: "count: "},
		{name: "content after the summary", text: head + sum + "\r\n`C,`1.00\r\n", line: 5, msg: "content after the summary row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := Date{Year: 2024, Month: 5, Day: 1}
			b, err := testLayout.Parse(d, []byte(tc.text))
			if tc.msg != "" {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Platform != "test" || pe.Line != tc.line || !strings.Contains(pe.Msg, tc.msg) {
					t.Fatalf("err = %#v, want line %d with %q", err, tc.line, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range b.Rows {
				got = append(got, r.OutTradeNo)
			}
			if strings.Join(got, "|") != strings.Join(tc.rows, "|") || (b.Summary != nil) != tc.summary ||
				b.Platform != "test" || b.Date != d {
				t.Fatalf("bill %+v summary %+v", b, b.Summary)
			}
		})
	}
}

func TestGunzipBill(t *testing.T) {
	t.Parallel()
	plain := []byte("no,amount\r\n`A,`1.00\r\n")
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	if _, err := zw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr bool
	}{
		{"plain text is itself", plain, plain, false},
		{"empty", nil, nil, false},
		{"gzip is decompressed", zipped.Bytes(), plain, false},
		{"truncated gzip", zipped.Bytes()[:zipped.Len()/2], nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := GunzipBill(tc.in)
			if (err != nil) != tc.wantErr || !bytes.Equal(got, tc.want) {
				t.Fatalf("GunzipBill = %q, %v", got, err)
			}
		})
	}
}

func TestAbsFen(t *testing.T) {
	t.Parallel()
	for in, want := range map[int64]int64{-990: 990, 0: 0, 17: 17} {
		if got := AbsFen(in); got != want {
			t.Errorf("AbsFen(%d) = %d", in, got)
		}
	}
}
