#!/usr/bin/env bash
# One run of the Swift test suite with a time limit. The suite takes 2-4 minutes here; a run
# still going after LIMIT seconds (default 600) has stalled: this prints the tests that started
# and never finished and every thread's stack (gdb), stops the run and fails. Never retried: a
# hang is a defect to find.
#
# usage: Tests/Scripts/guarded-test-run.sh [swift-testing arguments, e.g. --filter ResumeTests]
# env:   LIMIT (seconds), BIN (folder holding switchboardPackageTests.xctest; default: the debug build)
set -uo pipefail
cd "$(dirname "$0")/../.."
limit=${LIMIT:-600}
bin=${BIN:-$(swift build --show-bin-path)}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# In a process group of its own, so that a stopped run takes its redis-servers and nodes with it.
setsid "$bin/switchboardPackageTests.xctest" --testing-library swift-testing "$@" >"$log" 2>&1 &
pid=$!
tail -n +1 -f "$log" --pid "$pid" &
follower=$!
waited=0
while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do
  sleep 1
  waited=$((waited + 1))
done
if kill -0 "$pid" 2>/dev/null; then
  kill "$follower" 2>/dev/null
  echo
  echo "STALL: the test run was still going after ${limit} s."
  echo "Tests that started and never finished:"
  grep -oE 'Test [^ ]+ started' "$log" | grep -v '^Test run started' | sed 's/^Test //; s/ started$//' | sort -u >"$log.started"
  # "Test f() passed after …", "Test f(x:) with 3 test cases passed after …", "… failed after …"
  grep -oE 'Test [^ ]*( with [0-9]+ test cases?)? (passed|failed|skipped)' "$log" |
    sed -E 's/^Test //; s/ with [0-9]+ test cases?//; s/ (passed|failed|skipped)$//' | sort -u >"$log.ended"
  comm -23 "$log.started" "$log.ended" | sed 's/^/  /'
  rm -f "$log.started" "$log.ended"
  echo "Every thread's stack:"
  if command -v gdb >/dev/null; then
    timeout 120 gdb -p "$pid" -batch -ex "thread apply all bt" 2>&1 | grep -E '^(Thread|#)' || true
  else
    echo "  (gdb is not installed)"
  fi
  kill -9 -- "-$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  exit 124
fi
wait "$pid"
status=$?
wait "$follower" 2>/dev/null
exit "$status"
