// Package ids makes minigate's public identifiers: a short type prefix and a
// 26-character, time-ordered, random suffix (48-bit millisecond timestamp and
// 80 random bits in Crockford base32), e.g. "ord_01JD8X3Z6Q4V9K2M7N5P8R1T3W".
// Ordering by id is ordering by creation time, which keeps cursor paging
// simple.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// New returns a fresh id with the given prefix ("ord" → "ord_…").
func New(prefix string) string {
	return prefix + "_" + suffix(time.Now())
}

func suffix(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(t.UnixMilli())<<16)
	if _, err := rand.Read(b[6:16]); err != nil {
		panic("ids: crypto/rand failed: " + err.Error())
	}
	// 128 bits → 26 base32 digits (the top 2 bits of the first digit are 0).
	var out [26]byte
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	for i := 25; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// Valid reports whether s looks like an id with the given prefix.
func Valid(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix+"_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(alphabet, rest[i]) < 0 {
			return false
		}
	}
	return true
}
