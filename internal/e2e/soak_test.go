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

// TestSoakDatabaseFaults keeps the database stopped (and, on a second
// instance, blackholed) for 20 seconds under 60 payment notifications and
// 30 message pushes each.
func TestSoakDatabaseFaults(t *testing.T) {
	runDatabaseFaults(t, dbFaultRun{Orders: 20, Messages: 10, Outage: 20 * time.Second})
}
