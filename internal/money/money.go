// Package money converts between minigate's amounts — int64 fen (分)
// everywhere — and the yuan strings Alipay uses on the wire ("0.01",
// "100000000.00"). It works on digits and integers only: a float never
// touches an amount.
//
// Signs are handled explicitly. FormatYuan writes a negative amount with a
// leading '-' (bills list refunds that way). ParseYuan, used on amounts a
// platform sends for orders and refunds, accepts only non-negative amounts;
// ParseSignedYuan additionally accepts one leading '-', for bill rows.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Errors returned (wrapped, with the input) by the parsers.
var (
	// ErrSyntax means the string is not a yuan amount in the strict form
	// digits[.d[d]]: no sign (ParseYuan), no '+', no exponent, no spaces, no
	// leading zeros, at most two decimals, at least one digit on each side of
	// a '.'.
	ErrSyntax = errors.New("money: invalid yuan amount")
	// ErrRange means the amount does not fit in int64 fen.
	ErrRange = errors.New("money: yuan amount out of range")
)

// FormatYuan formats fen as yuan with exactly two decimals: 1 → "0.01",
// 100 → "1.00", 10000000000 → "100000000.00", -150 → "-1.50". Every int64,
// including math.MinInt64, is formatted exactly.
func FormatYuan(fen int64) string {
	neg := fen < 0
	// Magnitude as uint64: ^fen+1 is -fen without overflow at MinInt64.
	mag := uint64(fen)
	if neg {
		mag = uint64(^fen) + 1
	}
	var buf [24]byte
	i := len(buf)
	cents := mag % 100
	buf[i-1] = byte('0' + cents%10)
	buf[i-2] = byte('0' + cents/10)
	buf[i-3] = '.'
	i -= 3
	yuan := mag / 100
	for {
		i--
		buf[i] = byte('0' + yuan%10)
		yuan /= 10
		if yuan == 0 {
			break
		}
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return string(buf[i:])
}

// ParseYuan parses a non-negative yuan amount ("1", "1.5", "1.50") into fen.
// Anything else — a sign, more than two decimals, an exponent, spaces,
// leading zeros, "" — is ErrSyntax; an amount beyond int64 fen is ErrRange.
func ParseYuan(s string) (int64, error) {
	mag, err := parseMagnitude(s, s)
	if err != nil {
		return 0, err
	}
	if mag > math.MaxInt64 {
		return 0, fmt.Errorf("%w: %s", ErrRange, strconv.Quote(s))
	}
	return int64(mag), nil
}

// ParseSignedYuan is ParseYuan that also accepts one leading '-' ("-0.01"),
// as in bills' refund rows. It is the inverse of FormatYuan over all int64.
func ParseSignedYuan(s string) (int64, error) {
	if len(s) == 0 || s[0] != '-' {
		return ParseYuan(s)
	}
	mag, err := parseMagnitude(s[1:], s)
	if err != nil {
		return 0, err
	}
	switch {
	case mag == 0:
		// "-0.00" is not something a platform writes; keep one spelling of zero.
		return 0, fmt.Errorf("%w: %s", ErrSyntax, strconv.Quote(s))
	case mag > uint64(math.MaxInt64)+1:
		return 0, fmt.Errorf("%w: %s", ErrRange, strconv.Quote(s))
	}
	return int64(^(mag - 1)), nil // -mag without overflow at 2^63
}

// parseMagnitude parses digits[.d[d]] into fen as uint64; orig is the full
// input, for error messages.
func parseMagnitude(s, orig string) (uint64, error) {
	syntax := func() error { return fmt.Errorf("%w: %s", ErrSyntax, strconv.Quote(orig)) }
	intPart, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			intPart, frac = s[:i], s[i+1:]
			if len(frac) == 0 || len(frac) > 2 {
				return 0, syntax()
			}
			break
		}
	}
	if len(intPart) == 0 || (len(intPart) > 1 && intPart[0] == '0') {
		return 0, syntax()
	}
	var yuan uint64
	for i := 0; i < len(intPart); i++ {
		c := intPart[i]
		if c < '0' || c > '9' {
			return 0, syntax()
		}
		if yuan > (math.MaxUint64-9)/10 {
			return 0, fmt.Errorf("%w: %s", ErrRange, strconv.Quote(orig))
		}
		yuan = yuan*10 + uint64(c-'0')
	}
	var cents uint64
	for i := 0; i < 2; i++ {
		cents *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return 0, syntax()
			}
			cents += uint64(c - '0')
		}
	}
	if yuan > (math.MaxUint64-cents)/100 {
		return 0, fmt.Errorf("%w: %s", ErrRange, strconv.Quote(orig))
	}
	return yuan*100 + cents, nil
}
