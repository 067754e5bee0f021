package reconcile

import (
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/minigate/minigate/internal/money"
)

// MaxBillBytes bounds a downloaded (and decompressed) bill: a merchant with
// a million orders a day stays well inside it.
const MaxBillBytes = 256 << 20

// ReadBill reads r to its end, at most MaxBillBytes; a longer bill is
// ErrTooLarge.
func ReadBill(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxBillBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBillBytes {
		return nil, ErrTooLarge
	}
	return b, nil
}

// GunzipBill returns b decompressed (within MaxBillBytes) when it is gzip,
// recognised by its magic bytes, and b itself otherwise.
func GunzipBill(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return ReadBill(zr)
}

// DecodeText returns a bill's text as UTF-8: a UTF-8 BOM is dropped, and
// text that is not valid UTF-8 is read as GBK (GB18030, its superset), the
// encoding of Alipay's bills and of files saved by Chinese spreadsheets.
func DecodeText(b []byte) (string, error) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if utf8.Valid(b) {
		return string(b), nil
	}
	out, err := simplifiedchinese.GB18030.NewDecoder().Bytes(b)
	if err == nil && bytes.ContainsRune(out, utf8.RuneError) {
		// The decoder replaces what it cannot read.
		err = errors.New("invalid byte sequence")
	}
	if err != nil {
		return "", fmt.Errorf("reconcile: bill text is neither UTF-8 nor GBK: %w", err)
	}
	return strings.TrimPrefix(string(out), "\ufeff"), nil
}

// Lines splits text into lines, accepting CRLF, LF and lone CR endings, and
// drops a trailing empty line.
func Lines(text string) []string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	text = strings.TrimSuffix(text, "\n")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// SplitCSV splits one line of a bill into its cells. Bills quote nothing
// (WeChat Pay and QQ wallet protect cells with a backtick instead), but a
// cell may still be quoted, so the line goes through encoding/csv leniently.
func SplitCSV(line string) ([]string, error) {
	r := csv.NewReader(strings.NewReader(line))
	r.LazyQuotes = true
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// SplitBacktickRow splits a WeChat Pay or QQ wallet bill line. Their
// detail and summary cells all begin with a backtick, so a line that starts
// with one is split at ",`", which keeps a comma inside a cell (a product
// name) where it belongs; other lines (headers) go through SplitCSV.
func SplitBacktickRow(line string) ([]string, error) {
	if rest, ok := strings.CutPrefix(strings.TrimLeft(line, " \t"), "`"); ok {
		return strings.Split(rest, ",`"), nil
	}
	return SplitCSV(line)
}

// BacktickBill is the layout of WeChat Pay's trade bill and QQ wallet's
// statement (bill_type ALL): a header row, detail rows whose every cell
// starts with a backtick, then a summary header, whose first column is
// 总交易单数, and one summary row. Columns are found by name; the platform
// reads the rows.
type BacktickBill struct {
	Platform string
	// Name names the file in errors, e.g. "trade bill".
	Name string
	// Required are the columns without which the first line is not the
	// bill's header.
	Required []string
	// Row reads a detail row, Summary the summary row, by header h.
	Row     func(h Header, cells []string) (Row, error)
	Summary func(h Header, cells []string) (*Summary, error)
}

// backtickSummaryFirst is the first column of a backtick bill's summary
// header.
const backtickSummaryFirst = "总交易单数"

// Parse parses data, the bill of date. A BOM, CRLF line ends and GBK text
// are accepted and blank lines skipped; an empty file is an empty day.
// Errors are *ParseError naming the line of the problem.
func (l BacktickBill) Parse(date Date, data []byte) (*Bill, error) {
	text, err := DecodeText(data)
	if err != nil {
		return nil, &ParseError{Platform: l.Platform, Msg: err.Error()}
	}
	bill := &Bill{Platform: l.Platform, Date: date}
	lines := Lines(text)
	n := 0
	// next returns the next non-blank line's number and cells; past the
	// last line, its number and io.EOF.
	next := func() (int, []string, error) {
		for ; n < len(lines); n++ {
			if strings.TrimSpace(lines[n]) != "" {
				cells, err := SplitBacktickRow(lines[n])
				n++
				return n, cells, err
			}
		}
		return len(lines) + 1, nil, io.EOF
	}
	bad := func(line int, format string, args ...any) error {
		return &ParseError{Platform: l.Platform, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	lineNo, cells, err := next()
	switch {
	case errors.Is(err, io.EOF):
		return bill, nil
	case err != nil:
		return nil, bad(lineNo, "%v", err)
	}
	head := NewHeader(cells)
	if !head.Has(l.Required...) {
		return nil, bad(lineNo, "no %s header (%s)", l.Name, strings.Join(l.Required, ", "))
	}
	for {
		lineNo, cells, err := next()
		switch {
		case errors.Is(err, io.EOF):
			return bill, nil
		case err != nil:
			return nil, bad(lineNo, "%v", err)
		}
		if CleanCell(cells[0]) != backtickSummaryFirst {
			row, err := l.Row(head, cells)
			if err != nil {
				return nil, bad(lineNo, "%v", err)
			}
			bill.Rows = append(bill.Rows, row)
			continue
		}
		sumHead := NewHeader(cells)
		lineNo, cells, err = next()
		switch {
		case errors.Is(err, io.EOF):
			return nil, bad(lineNo, "summary header without a summary row")
		case err != nil:
			return nil, bad(lineNo, "%v", err)
		}
		if bill.Summary, err = l.Summary(sumHead, cells); err != nil {
			return nil, bad(lineNo, "%v", err)
		}
		if lineNo, _, err = next(); !errors.Is(err, io.EOF) {
			return nil, bad(lineNo, "content after the summary row")
		}
		return bill, nil
	}
}

// AbsFen returns the magnitude of v: bills write refunded amounts with
// either sign.
func AbsFen(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// ParseAmount parses a bill's yuan amount into fen, exactly: "1", "1.5",
// "1.50", "-0.01". Bills also write zero as "-0.00" or "0.0"; both are 0.
func ParseAmount(s string) (int64, error) {
	s = CleanCell(s)
	if rest, neg := strings.CutPrefix(s, "-"); neg {
		if v, err := money.ParseYuan(rest); err == nil && v == 0 {
			return 0, nil
		}
	}
	v, err := money.ParseSignedYuan(s)
	if err != nil {
		return 0, fmt.Errorf("reconcile: amount %q: %w", s, err)
	}
	return v, nil
}

// ParseAmountOr0 is ParseAmount with "" meaning 0, for optional columns.
func ParseAmountOr0(s string) (int64, error) {
	if CleanCell(s) == "" {
		return 0, nil
	}
	return ParseAmount(s)
}

// timeLayouts are the ways bills write times, all Asia/Shanghai.
var timeLayouts = []string{
	time.DateTime,             // 2006-01-02 15:04:05 (WeChat Pay, Alipay, QQ wallet)
	"2006-01-02 15:04:05.000", // with milliseconds
	"2006/01/02 15:04:05",     // re-saved by a spreadsheet
	"2006/1/2 15:04:05",
	"2006/1/2 15:04",
	"20060102150405",
	time.RFC3339,
}

// ParseTime reads a bill's wall-clock time in Asia/Shanghai. A full-width
// colon (seen in samples of WeChat Pay's older bills) is accepted.
func ParseTime(s string) (time.Time, error) {
	s = strings.ReplaceAll(CleanCell(s), "：", ":")
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, Zone); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("reconcile: time %q: not a bill time", s)
}

// ErrTooLarge is returned (wrapped) for a bill beyond MaxBillBytes.
var ErrTooLarge = errors.New("reconcile: bill larger than the limit")
