#!/usr/bin/env bash
# Runs the Go fuzz targets in the module for a while each.
#   scripts/fuzz.sh 100000x          every target for 100,000 inputs (make fuzz)
#   scripts/fuzz.sh 3000x 'REGEXP'   the targets whose names match REGEXP
#                                    (make test fuzzes the message parsers
#                                    and decryptors briefly this way)
# The budget is a -fuzztime: a count (Nx) or a duration (30s). Prefer
# counts: with a duration, go1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" failure, without a crasher, when the time is
# up (golang/go#75804, fixed in go1.27).
# Seed corpora live in each package's testdata/fuzz/; plain `go test` runs
# the seeds as regular tests. New crashers are written there by the fuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
TIME=${1:-100000x}
MATCH=${2:-.}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail=0
while IFS=: read -r file func; do
  [[ $func =~ $MATCH ]] || continue
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $func ($TIME)"
  if ! go test -run='^$' -fuzz="^${func}\$" -fuzztime="$TIME" "$pkg" >"$log" 2>&1; then
    cat "$log"; fail=1
  fi
done < <(grep -rEo --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' . | sed -E 's/^\.\///; s/:func /:/' | sort -u)
exit $fail
