#!/usr/bin/env bash
# Two builds of Switchboard side by side, to see what a change does end to end: each build
# gets two nodes on a redis-server of its own, and the load tool's join and relay runs go to
# one build, then the other, ROUNDS times (default 2, in alternating order), so both see the same
# machine. The join run also reports, per join, the publishes and Redis CPU (from INFO) and the
# nodes' CPU (from /proc), over windows from each POST until every member has its add-peer, and
# each Redis command's calls and time in those windows (scripts' own calls included). Then
# relays for DURATION, closed loop and at a fixed RATE (default 2000/s): throughput, p99, CPU µs
# per relay summed over both nodes and Redis (from /proc), Redis's part of it, the nodes'
# `write` system calls per relay (from /proc/PID/io), and the load tool's own CPU per relay.
# LOAD_BEFORE (a folder with switchboard-load) drives the before build with a tool of its own,
# to measure a change to the tool. SKIP_JOINS=1 runs the relays only.
#   git worktree add /tmp/before <commit> && (cd /tmp/before && swift build -c release --product switchboard)
#   swift build -c release
#   Benchmarks/side-by-side.sh /tmp/before/.build/release .build/release
# The load tool is taken from the second folder.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -eq 2 ] || { echo "usage: $0 BEFORE_BIN_DIR AFTER_BIN_DIR (folders holding a switchboard binary)" >&2; exit 2; }
BINS=("$1" "$2")
NAMES=(before after)
for bin in "${BINS[@]}"; do [ -x "$bin/switchboard" ] || { echo "no switchboard in $bin" >&2; exit 2; }; done
LOAD="$2/switchboard-load"
[ -x "$LOAD" ] || { echo "no switchboard-load in $2: swift build -c release --product switchboard-load" >&2; exit 2; }
LOADS=("${LOAD_BEFORE:-$2}/switchboard-load" "$LOAD")
[ -x "${LOADS[0]}" ] || { echo "no switchboard-load in ${LOAD_BEFORE:-$2}" >&2; exit 2; }
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
RATE=${RATE:-2000}

WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

export SWITCHBOARD_TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHBOARD_LOG_LEVEL=error
# The load itself would trip the per-peer rate limits.
export SWITCHBOARD_RELAY_RATE=0 SWITCHBOARD_JOIN_RATE=0
for i in 0 1; do
  mkdir -p "$WORK/$i"
  redis-server --port $((16391 + i)) --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/$i" --logfile "$WORK/$i/redis.log" &
  PIDS+=($!)
done
sleep 0.5
NODE_PIDS=("" "")
REDIS_PIDS=("${PIDS[0]}" "${PIDS[1]}")
for i in 0 1; do
  for n in 1 2; do
    "${BINS[$i]}/switchboard" serve --port $((18100 + 100 * i + n)) --redis redis://127.0.0.1:$((16391 + i)) --node-id "${NAMES[$i]}$n" &
    PIDS+=($!)
    NODE_PIDS[$i]+=" --pid $!"
  done
done
sleep 1

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
# Odd rounds run before then after, even rounds the other way round: this VM drifts over a run,
# and whichever build goes first in a round tends to do better.
for round in $(seq 1 "$ROUNDS"); do
  ORDER=(0 1)
  [ $((round % 2)) -eq 0 ] && ORDER=(1 0)
  for i in "${ORDER[@]}"; do
    echo "== round $round: ${NAMES[$i]} (${BINS[$i]})"
    NODES=(--node http://127.0.0.1:$((18101 + 100 * i)) --node http://127.0.0.1:$((18102 + 100 * i)))
    if [ -z "${SKIP_JOINS:-}" ]; then
      # shellcheck disable=SC2086
      "${LOADS[$i]}" join "${NODES[@]}" --sizes 2,10,100 --repetitions 50 --redis redis://127.0.0.1:$((16391 + i)) ${NODE_PIDS[$i]} --command-costs 2>/dev/null
    fi
    # shellcheck disable=SC2086
    processes=($(echo ${NODE_PIDS[$i]} | sed 's/--pid //g') "${REDIS_PIDS[$i]}")
    for rate in 0 "$RATE"; do
      nodes_only=("${processes[@]:0:2}")
      before=$(cpu_sum "${processes[@]}") redis_before=$(cpu_sum "${REDIS_PIDS[$i]}") writes_before=$(writes_sum "${nodes_only[@]}")
      { time "${LOADS[$i]}" relay "${NODES[@]}" --pairs 16 --rate "$rate" --duration "$DURATION" --json >"$WORK/relay.json" 2>/dev/null; } 2>"$WORK/relay.time"
      after=$(cpu_sum "${processes[@]}") redis_after=$(cpu_sum "${REDIS_PIDS[$i]}") writes_after=$(writes_sum "${nodes_only[@]}")
      delivered=$(field delivered <"$WORK/relay.json")
      echo "relays $([ "$rate" = 0 ] && echo "closed loop" || echo "at $rate/s") $(field per_second <"$WORK/relay.json" | cut -d. -f1)/s, p99 $(field p99_ms <"$WORK/relay.json") ms, lost $(field lost <"$WORK/relay.json"); CPU per relay $(us_per "$before" "$after" "$delivered") µs (Redis $(us_per "$redis_before" "$redis_after" "$delivered")), the nodes' writes per relay $(echo "scale=2; ($writes_after - $writes_before) / $delivered" | bc); load tool CPU per relay $(tool_us_per "$WORK/relay.time" "$delivered") µs"
    done
  done
done
