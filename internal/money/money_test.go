package money

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

func TestFormatYuan(t *testing.T) {
	t.Parallel()
	cases := []struct {
		fen  int64
		want string
	}{
		{0, "0.00"},
		{1, "0.01"},
		{9, "0.09"},
		{10, "0.10"},
		{99, "0.99"},
		{100, "1.00"},
		{101, "1.01"},
		{150, "1.50"},
		{123456, "1234.56"},
		{10000000000, "100000000.00"}, // Alipay's maximum order amount
		{-1, "-0.01"},
		{-150, "-1.50"},
		{math.MaxInt64, "92233720368547758.07"},
		{math.MinInt64, "-92233720368547758.08"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			t.Parallel()
			if got := FormatYuan(c.fen); got != c.want {
				t.Fatalf("FormatYuan(%d) = %q, want %q", c.fen, got, c.want)
			}
		})
	}
}

func TestParseYuan(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		want    int64
		wantErr error
	}{
		{in: "0", want: 0},
		{in: "0.00", want: 0},
		{in: "0.01", want: 1},
		{in: "0.1", want: 10},
		{in: "1", want: 100},
		{in: "1.5", want: 150},
		{in: "1.50", want: 150},
		{in: "1.05", want: 105},
		{in: "10", want: 1000},
		{in: "100000000.00", want: 10000000000},
		{in: "92233720368547758.07", want: math.MaxInt64},
		{in: "92233720368547758.08", wantErr: ErrRange},
		{in: "92233720368547759", wantErr: ErrRange},
		{in: "184467440737095516.15", wantErr: ErrRange}, // MaxUint64 fen
		{in: "184467440737095516.16", wantErr: ErrRange},
		{in: "99999999999999999999999", wantErr: ErrRange},
		{in: "", wantErr: ErrSyntax},
		{in: ".", wantErr: ErrSyntax},
		{in: "1.505", wantErr: ErrSyntax},
		{in: "1.", wantErr: ErrSyntax},
		{in: ".5", wantErr: ErrSyntax},
		{in: "abc", wantErr: ErrSyntax},
		{in: "+1", wantErr: ErrSyntax},
		{in: "-1", wantErr: ErrSyntax},
		{in: "-0.01", wantErr: ErrSyntax},
		{in: "1e2", wantErr: ErrSyntax},
		{in: "1E2", wantErr: ErrSyntax},
		{in: " 1", wantErr: ErrSyntax},
		{in: "1 ", wantErr: ErrSyntax},
		{in: "1,000.00", wantErr: ErrSyntax},
		{in: "01", wantErr: ErrSyntax},
		{in: "00.01", wantErr: ErrSyntax},
		{in: "1..0", wantErr: ErrSyntax},
		{in: "1.0.0", wantErr: ErrSyntax},
		{in: "1.a", wantErr: ErrSyntax},
		{in: "0x10", wantErr: ErrSyntax},
		{in: "NaN", wantErr: ErrSyntax},
		{in: "Inf", wantErr: ErrSyntax},
		{in: "１", wantErr: ErrSyntax}, // full-width digit
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.in), func(t *testing.T) {
			t.Parallel()
			got, err := ParseYuan(c.in)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("ParseYuan(%q) = %d, %v; want error %v", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ParseYuan(%q) = %d, %v; want %d", c.in, got, err, c.want)
			}
		})
	}
}

func TestParseSignedYuan(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		want    int64
		wantErr error
	}{
		{in: "1.50", want: 150},
		{in: "-1.50", want: -150},
		{in: "-0.01", want: -1},
		{in: "-92233720368547758.08", want: math.MinInt64},
		{in: "-92233720368547758.09", wantErr: ErrRange},
		{in: "92233720368547758.08", wantErr: ErrRange},
		{in: "-0.00", wantErr: ErrSyntax},
		{in: "-", wantErr: ErrSyntax},
		{in: "--1", wantErr: ErrSyntax},
		{in: "+1", wantErr: ErrSyntax},
		{in: "-1.505", wantErr: ErrSyntax},
		{in: "", wantErr: ErrSyntax},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.in), func(t *testing.T) {
			t.Parallel()
			got, err := ParseSignedYuan(c.in)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("ParseSignedYuan(%q) = %d, %v; want error %v", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ParseSignedYuan(%q) = %d, %v; want %d", c.in, got, err, c.want)
			}
		})
	}
}

// TestRoundTripSmallAmounts checks every amount from 0.01 to 1000.00 yuan
// against an independent formatting (Sprintf of the integer parts) and back.
func TestRoundTripSmallAmounts(t *testing.T) {
	t.Parallel()
	for fen := int64(1); fen <= 100000; fen++ {
		want := fmt.Sprintf("%d.%02d", fen/100, fen%100)
		s := FormatYuan(fen)
		if s != want {
			t.Fatalf("FormatYuan(%d) = %q, want %q", fen, s, want)
		}
		back, err := ParseYuan(s)
		if err != nil || back != fen {
			t.Fatalf("ParseYuan(%q) = %d, %v; want %d", s, back, err, fen)
		}
		neg, err := ParseSignedYuan(FormatYuan(-fen))
		if err != nil || neg != -fen {
			t.Fatalf("ParseSignedYuan(FormatYuan(%d)) = %d, %v", -fen, neg, err)
		}
		// The short spellings Alipay may use parse to the same amount.
		if fen%10 == 0 {
			short := fmt.Sprintf("%d.%d", fen/100, fen%100/10)
			if got, err := ParseYuan(short); err != nil || got != fen {
				t.Fatalf("ParseYuan(%q) = %d, %v; want %d", short, got, err, fen)
			}
		}
	}
}

func TestRoundTripExtremes(t *testing.T) {
	t.Parallel()
	for _, fen := range []int64{0, 1, 10000000000, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1, -1} {
		got, err := ParseSignedYuan(FormatYuan(fen))
		if err != nil {
			t.Fatalf("ParseSignedYuan(FormatYuan(%d)): %v", fen, err)
		}
		if got != fen {
			t.Fatalf("round trip of %d gave %d", fen, got)
		}
	}
}

func FuzzParseYuan(f *testing.F) {
	for _, s := range []string{"0", "0.01", "1.5", "100000000.00", "92233720368547758.07", "92233720368547758.08", "-1.00", "1e2", "", "01", "1.505"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseYuan(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrRange) {
				t.Fatalf("ParseYuan(%q): unexpected error kind %v", s, err)
			}
			return
		}
		if v < 0 {
			t.Fatalf("ParseYuan(%q) = %d, negative", s, v)
		}
		// Accepted input is canonical up to trailing decimals: formatting the
		// value must give back the input padded to two decimals.
		out := FormatYuan(v)
		if again, err := ParseYuan(out); err != nil || again != v {
			t.Fatalf("ParseYuan(FormatYuan(%d)) = %d, %v", v, again, err)
		}
		if !(out == s || out == s+".00" || out == s+"0") {
			t.Fatalf("ParseYuan(%q) = %d, which formats as %q", s, v, out)
		}
		if sv, err := ParseSignedYuan(s); err != nil || sv != v {
			t.Fatalf("ParseSignedYuan(%q) = %d, %v; ParseYuan gave %d", s, sv, err, v)
		}
	})
}

func FuzzFormatYuan(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 100, math.MaxInt64, math.MinInt64} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, fen int64) {
		s := FormatYuan(fen)
		got, err := ParseSignedYuan(s)
		if fen == 0 {
			if s != "0.00" {
				t.Fatalf("FormatYuan(0) = %q", s)
			}
			return
		}
		if err != nil || got != fen {
			t.Fatalf("ParseSignedYuan(FormatYuan(%d) = %q) = %d, %v", fen, s, got, err)
		}
	})
}

func BenchmarkFormatYuan(b *testing.B) {
	for i := range b.N {
		_ = FormatYuan(int64(i))
	}
}

func BenchmarkParseYuan(b *testing.B) {
	for range b.N {
		if _, err := ParseYuan("12345.67"); err != nil {
			b.Fatal(err)
		}
	}
}
