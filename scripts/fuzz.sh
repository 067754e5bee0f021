#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a while each.
#   scripts/fuzz.sh 30s      each target for 30 seconds (make fuzz)
# Seed corpora live in each package's testdata/fuzz/; plain `go test` runs
# the seeds as regular tests. New crashers are written there by the fuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
TIME=${1:-30s}
fail=0
while IFS=: read -r file func; do
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $func ($TIME)"
  if ! go test -run='^$' -fuzz="^${func}\$" -fuzztime="$TIME" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
    cat /tmp/fuzz-$$.log; fail=1
  fi
done < <(grep -rEo --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' . | sed -E 's/^\.\///; s/:func /:/' | sort -u)
rm -f /tmp/fuzz-$$.log
exit $fail
