#!/usr/bin/env bash
# Runs the whole Swift test suite RUNS times in a row (default 20) and reports each run's time
# and result; stops at the first stall. Conditions that once made a run stall more often:
#   CPUS=0   pins the suite (and the redis-servers it starts) to those CPUs (taskset -c), so the
#            Swift concurrency pool has one thread;
#   HOG=1    keeps one busy loop per CPU running beside it.
# usage: Tests/Scripts/soak.sh [RUNS]   (build first: swift build --build-tests)
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}
logs=${LOGS:-$(mktemp -d)}
mkdir -p "$logs"
hogs=()
if [ "${HOG:-0}" = 1 ]; then
  for _ in $(seq "$(nproc)"); do (while :; do :; done) & hogs+=($!); done
fi
trap '[ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null' EXIT
pin=()
[ -n "${CPUS:-}" ] && pin=(taskset -c "$CPUS")
echo "soak: $runs runs, CPUS=${CPUS:-all} HOG=${HOG:-0}, logs in $logs"
passed=0
for run in $(seq "$runs"); do
  start=$(date +%s)
  ${pin[@]+"${pin[@]}"} Tests/Scripts/guarded-test-run.sh >"$logs/run-$run.log" 2>&1
  status=$?
  seconds=$(( $(date +%s) - start ))
  summary=$(grep -E 'Test run with [0-9]+ tests' "$logs/run-$run.log" | tail -1 | sed 's/^[^T]*//')
  case $status in
    0) result=passed; passed=$((passed + 1)) ;;
    124) result=STALLED ;;
    *) result="failed ($status)" ;;
  esac
  printf 'run %2d: %-10s %4d s  %s\n' "$run" "$result" "$seconds" "$summary"
  [ $status = 124 ] && { echo "stall: see $logs/run-$run.log"; exit 1; }
done
echo "soak: $passed of $runs runs passed, none stalled"
[ "$passed" = "$runs" ]
