package sandbox

import (
	"crypto/rand"
	"crypto/rsa"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gofiber/fiber/v2"
)

var (
	testKeyPool = sync.OnceValue(func() []*rsa.PrivateKey {
		keys := make([]*rsa.PrivateKey, 4)
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		}
		return keys
	})
	testKeyNext atomic.Int64
)

// testKey hands out keys from a small pool generated once (AppSpec.Key).
func testKey() (*rsa.PrivateKey, error) {
	pool := testKeyPool()
	return pool[int(testKeyNext.Add(1))%len(pool)], nil
}

// serveTest serves s on a loopback port, mounted at /sandbox as minigate
// mounts it, until the test ends; it returns the /sandbox URL.
func serveTest(t *testing.T, s *Sandbox) string {
	t.Helper()
	srv := fiber.New(fiber.Config{DisableStartupMessage: true})
	srv.Mount("/sandbox", s.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Listener(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String() + "/sandbox"
}

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
