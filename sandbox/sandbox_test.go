package sandbox

import "testing"

func TestInjectedFailures(t *testing.T) {
	t.Parallel()
	type call struct {
		key, api string
		want     string // "" = no failure due
	}
	for _, tc := range []struct {
		name   string
		inject func(q *injectedFailures[string])
		calls  []call
	}{
		{
			name:   "one call by default",
			inject: func(q *injectedFailures[string]) { q.add("a", "x", 0, "f") },
			calls:  []call{{"a", "x", "f"}, {"a", "x", ""}},
		},
		{
			name:   "times calls, only to its api and key",
			inject: func(q *injectedFailures[string]) { q.add("a", "x", 2, "f") },
			calls:  []call{{"a", "y", ""}, {"b", "x", ""}, {"a", "x", "f"}, {"a", "x", "f"}, {"a", "x", ""}},
		},
		{
			name:   "empty api matches any",
			inject: func(q *injectedFailures[string]) { q.add("a", "", 2, "any") },
			calls:  []call{{"a", "x", "any"}, {"a", "y", "any"}, {"a", "z", ""}},
		},
		{
			name: "first injected first, skipping other apis",
			inject: func(q *injectedFailures[string]) {
				q.add("a", "x", 1, "f1")
				q.add("a", "y", 1, "g")
				q.add("a", "x", 1, "f2")
			},
			calls: []call{{"a", "x", "f1"}, {"a", "x", "f2"}, {"a", "y", "g"}, {"a", "x", ""}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var q injectedFailures[string]
			tc.inject(&q)
			for i, c := range tc.calls {
				got, ok := q.take(c.key, c.api)
				if ok != (c.want != "") || got != c.want {
					t.Fatalf("call %d (%s %s): %q %v, want %q", i, c.key, c.api, got, ok, c.want)
				}
			}
		})
	}
}
