package reconcile

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/minigate/minigate/internal/money"
)

// MaxBillBytes bounds a downloaded (and decompressed) bill: a merchant with
// a million orders a day stays well inside it.
const MaxBillBytes = 256 << 20

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
