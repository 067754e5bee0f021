package ids

import (
	"sort"
	"testing"
	"time"
)

func TestNewIsValidUniqueAndTimeOrdered(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	var list []string
	for i := range 2000 {
		id := New("ord")
		if !Valid("ord", id) {
			t.Fatalf("invalid id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q after %d", id, i)
		}
		seen[id] = true
		list = append(list, id)
	}
	early, late := "ord_"+suffix(time.UnixMilli(1_700_000_000_000)), "ord_"+suffix(time.UnixMilli(1_700_000_000_001))
	if !(early < late) {
		t.Fatalf("ids not ordered by time: %s !< %s", early, late)
	}
	sorted := append([]string(nil), list...)
	sort.Strings(sorted)
	if sorted[0][:14] > list[len(list)-1][:14] {
		t.Fatalf("time prefix not monotone")
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix, s string
		want      bool
	}{
		{"ord", New("ord"), true},
		{"usr", New("ord"), false},
		{"ord", "ord_short", false},
		{"ord", "ord_01JD8X3Z6Q4V9K2M7N5P8R1T3U", false}, // U is not Crockford
		{"ord", "ord_01JD8X3Z6Q4V9K2M7N5P8R1T3W", true},
	} {
		if got := Valid(tc.prefix, tc.s); got != tc.want {
			t.Errorf("Valid(%q, %q) = %v", tc.prefix, tc.s, got)
		}
	}
}
