#!/usr/bin/env bash
# Switchboard against the original article's design (Benchmarks/original: Express + node-redis),
# in one run: each gets two nodes on a redis-server of its own, and the same load tool drives
# each in turn, ROUNDS times (default 3, the order reversed every other round, since this VM
# drifts over a run). Per round and per design:
#   - closed-loop relays (16 pairs, each sender posting to the node after its receiver's):
#     throughput, p99, CPU µs per relay summed over both nodes and Redis (from /proc), and the
#     load tool's own CPU per relay (it shares the machine: in closed loop it is a ceiling too);
#   - relays at a fixed RATE (default 2000/s): p50, p99 and CPU µs per relay;
#   - a join into a room of 99 members: joiner p50, and CPU µs per join (nodes + Redis, over
#     windows from the POST until every member has its add-peer).
# Switchboard also gets the HTTP ceiling on the same stack: wrk on GET /healthz of one node,
# with the node's CPU µs per request, and the ratio of closed-loop relays to it. Given a second
# folder, that build of Switchboard runs too, beside the other two: what a change does.
#   swift build -c release --product switchboard --product switchboard-load
#   Benchmarks/versus-original.sh .build/release [BEFORE_BIN_DIR]
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."

[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 BIN_DIR [BEFORE_BIN_DIR] (folders holding switchboard; the first also switchboard-load)" >&2; exit 2; }
BIN=$1
for tool in switchboard switchboard-load; do [ -x "$BIN/$tool" ] || { echo "no $tool in $BIN" >&2; exit 2; }; done
[ $# -lt 2 ] || [ -x "$2/switchboard" ] || { echo "no switchboard in $2" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
RATE=${RATE:-2000}  # this VM at its worst (half its CPU stolen) cannot carry 2000: try 500
LOAD="$BIN/switchboard-load"

WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
export SWITCHBOARD_TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHBOARD_LOG_LEVEL=error
export SWITCHBOARD_RELAY_RATE=0 SWITCHBOARD_JOIN_RATE=0  # the load would trip the per-peer limits

redis_pid() { redis-cli -p "$1" INFO server | sed -n 's/^process_id:\([0-9]*\).*/\1/p'; }
# Each design: a name, its nodes' URLs as load-tool options, its node pids, its Redis port.
NAMES=() URLS=() NODE_PIDS=() REDIS_PORTS=()
# A Switchboard build: its own redis-server and two nodes. (name, bin folder, index)
start_switchboard() {
  local redis_port=$((16401 + 10 * $3)) pids=""
  mkdir -p "$WORK/$1"
  redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/$1" --logfile "$WORK/$1/redis.log" &
  PIDS+=($!)
  sleep 0.5
  for n in 1 2; do
    "$2/switchboard" serve --port $((18400 + 10 * $3 + n)) --redis redis://127.0.0.1:$redis_port --node-id "$1-$n" &
    PIDS+=($!)
    pids+=" $!"
  done
  wait_ready http://127.0.0.1:$((18401 + 10 * $3)) http://127.0.0.1:$((18402 + 10 * $3))
  NAMES+=("$1") URLS+=("--node http://127.0.0.1:$((18401 + 10 * $3)) --node http://127.0.0.1:$((18402 + 10 * $3))") NODE_PIDS+=("$pids") REDIS_PORTS+=($redis_port)
}
start_switchboard switchboard "$BIN" 0
[ $# -lt 2 ] || start_switchboard before "$2" 1
# The original: start.sh brings its own redis-server and nodes, and prints their pids.
NODES=2 PORT=18491 REDIS_PORT=16491 Benchmarks/original/start.sh >"$WORK/original.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [ "$(grep -c '^node pid' "$WORK/original.out")" = 2 ] && break; sleep 0.1; done
[ "$(grep -c '^node pid' "$WORK/original.out")" = 2 ] || { cat "$WORK/original.out" >&2; exit 1; }
NAMES+=(original) URLS+=("--node http://127.0.0.1:18491 --node http://127.0.0.1:18492") REDIS_PORTS+=(16491)
NODE_PIDS+=("$(sed -n 's/^node pid \([0-9]*\):.*/\1/p' "$WORK/original.out" | xargs)")

# Context switches summed over the listed processes' threads: a hop between two threads costs
# one on each side, and the host's stealing moves this count far less than CPU time (the
# offered rate does move it: at a low rate nothing is batched).
switches() { for pid in "$@"; do cat /proc/"$pid"/task/*/status 2>/dev/null; done | awk '/ctxt_switches/ {n += $2} END {print n}'; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
head -1 "$WORK/original.out"
for round in $(seq 1 "$ROUNDS"); do
  stolen_before=$(steal)
  ORDER=("${!NAMES[@]}")
  [ $((round % 2)) -eq 0 ] && ORDER=($(printf '%s\n' "${ORDER[@]}" | tac))
  for i in "${ORDER[@]}"; do
    name=${NAMES[$i]}
    # shellcheck disable=SC2206
    processes=(${NODE_PIDS[$i]} $(redis_pid "${REDIS_PORTS[$i]}"))
    ceiling=""
    if [ "$name" != original ]; then
      url=$(echo "${URLS[$i]}" | cut -d' ' -f2)
      before=$(cpu_sum "${processes[0]}")
      wrk_out=$(wrk -t2 -c16 -d"${DURATION}s" "$url/healthz")
      after=$(cpu_sum "${processes[0]}")
      requests=$(echo "$wrk_out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
      ceiling=$(echo "$wrk_out" | sed -n 's/^Requests\/sec: *\([0-9]*\).*/\1/p')
      echo "round $round, $name: healthz ceiling ${ceiling}/s, node CPU per request $(us_per "$before" "$after" "$requests") µs"
    fi
    for rate in 0 "$RATE"; do
      before=$(cpu_sum "${processes[@]}") switches_before=$(switches "${processes[@]}")
      # shellcheck disable=SC2086
      # The load tool's own CPU too: it shares the machine, and closed-loop relays are its
      # ceiling as much as the nodes' (bash's `time` reads the child's user + system time).
      { time "$LOAD" relay ${URLS[$i]} --pairs 16 --rate "$rate" --duration "$DURATION" --json >"$WORK/relay.json" 2>/dev/null; } 2>"$WORK/relay.time"
      relay=$(cat "$WORK/relay.json")
      after=$(cpu_sum "${processes[@]}") switches_after=$(switches "${processes[@]}")
      delivered=$(echo "$relay" | field delivered)
      per_second=$(echo "$relay" | field per_second | cut -d. -f1)
      pace=$([ "$rate" = 0 ] && echo "closed loop" || echo "at $rate/s")
      line="round $round, $name: relays $pace ${per_second}/s, p50 $(echo "$relay" | field p50_ms) ms, p99 $(echo "$relay" | field p99_ms) ms, lost $(echo "$relay" | field lost); CPU per relay $(us_per "$before" "$after" "$delivered") µs, $(echo "scale=1; ($switches_after - $switches_before) / $delivered" | bc) context switches; load tool CPU per relay $(tool_us_per "$WORK/relay.time" "$delivered") µs"
      [ -n "$ceiling" ] && [ "$rate" = 0 ] && line+=" ($(echo "scale=2; $per_second / $ceiling" | bc) of the healthz ceiling)"
      echo "$line"
    done
    pid_options=$(for pid in ${NODE_PIDS[$i]}; do printf -- '--pid %s ' "$pid"; done)
    # shellcheck disable=SC2086
    join=$("$LOAD" join ${URLS[$i]} --sizes 100 --repetitions 30 --redis "redis://127.0.0.1:${REDIS_PORTS[$i]}" $pid_options --json 2>/dev/null)
    redis_us=$(echo "$join" | field redis_cpu_us | cut -d. -f1)
    node_us=$(echo "$join" | field node_cpu_us | cut -d. -f1)
    echo "round $round, $name: join into 99 members, joiner p50 $(echo "$join" | field joiner_p50_ms) ms, all p50 $(echo "$join" | field all_p50_ms) ms; CPU per join $((redis_us + node_us)) µs (nodes $node_us, Redis $redis_us)"
  done
  echo "round $round: $(stolen_percent "$stolen_before" "$(steal)")% of the machine's CPU time stolen by the hypervisor"
done
