//go:build soak

package e2e

import (
	"testing"
	"time"
)

// The soak versions of the resilience tests: `make soak` runs them (build
// tag soak). They are the same tests with bigger bursts and more faults.

// TestSoakCrash kills minigate five times, each in the middle of a burst of
// 60 payment notifications and 60 message pushes.
func TestSoakCrash(t *testing.T) {
	runCrash(t, crashRun{Rounds: 5, Orders: 20, Messages: 20, Burst: 5 * time.Second})
}
