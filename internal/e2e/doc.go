// Package e2e holds minigate's cross-cutting end-to-end and resilience
// tests: they run minigate (in process through testenv, or as a real
// process) against the simulator and a real Postgres and break things on
// purpose — kill -9 in the middle of a burst of callbacks, a database that is
// stopped or blackholed, a platform slower than the upstream timeout, two
// instances on one database — then check what the platforms and the
// business backend saw: every acknowledged callback stored, every order
// moved once, every event delivered once to a de-duplicating receiver, no
// secret in any response or log line, hostile XML refused everywhere.
//
// `make test` runs the tests that fit its time budget; `make soak` (build
// tag soak) runs the long versions. docs/resilience.md says what each test
// proves and how to run it.
package e2e
