#!/usr/bin/env bash
# End-to-end figures, all in one run on this machine: a redis-server, two release-built
# Switchboard nodes on it, the load tool against them, and the ceilings measured beside
# them (redis-benchmark for PUBLISH and EVALSHA, wrk for an HTTP answer on the same stack).
#   Benchmarks/load.sh            # everything
#   QUICK=1 Benchmarks/load.sh    # shorter runs
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
[ -n "${QUICK:-}" ] && DURATION=3
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

swift build -c release --product switchboard >/dev/null
swift build -c release --product switchboard-load >/dev/null
BIN=$(swift build -c release --show-bin-path)

WORK=$(mktemp -d)
# Nodes first (their streams clean up in Redis), then Redis.
cleanup() { kill ${A:-} ${B:-} ${C:-} ${D:-} 2>/dev/null || true; wait ${A:-} ${B:-} ${C:-} ${D:-} 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

REDIS_PORT=16379
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
sleep 0.5
export SWITCHBOARD_TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHBOARD_LOG_LEVEL=error
# The load itself would trip the per-peer rate limits.
export SWITCHBOARD_RELAY_RATE=0 SWITCHBOARD_JOIN_RATE=0
"$BIN/switchboard" serve --port 18001 --redis redis://127.0.0.1:$REDIS_PORT --node-id a &
A=$!
"$BIN/switchboard" serve --port 18002 --redis redis://127.0.0.1:$REDIS_PORT --node-id b &
B=$!
sleep 1
NODES=(--node http://127.0.0.1:18001 --node http://127.0.0.1:18002)
LOAD="$BIN/switchboard-load"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "== ceilings"
last() { tr '\r' '\n' | grep -v '^ *$' | tail -1; }  # redis-benchmark's final line
redis-cli -p $REDIS_PORT SCRIPT LOAD "$(cat Lua/relay.lua)" >"$WORK/sha"
redis-cli -p $REDIS_PORT HSET 'sb:peer:{bench}' session s >/dev/null
redis-cli -p $REDIS_PORT SADD 'sb:peer:{bench}:rooms' room >/dev/null
echo "redis-benchmark PUBLISH, 1 client (one round trip at a time):"
redis-benchmark -p $REDIS_PORT -c 1 -n 50000 -q PUBLISH sb:to:bench "$(printf 'x%.0s' {1..150})" | last | sed 's/x\{20,\}/…/'
echo "redis-benchmark EVALSHA relay.lua (checks, log entry, PUBLISH), 1 client:"
redis-benchmark -p $REDIS_PORT -c 1 -n 50000 -q EVALSHA "$(cat "$WORK/sha")" 3 'sb:peer:{bench}' 'sb:peer:{bench}:rooms' 'sb:peer:{bench}:log' \
  bench "sb:peer:{bench}:events" note "$(printf 'x%.0s' {1..150})" 1000 70000 room | last | sed 's/x\{20,\}/…/'
echo "redis-benchmark PUBLISH, 16 clients:"
redis-benchmark -p $REDIS_PORT -c 16 -n 200000 -q PUBLISH sb:to:bench "$(printf 'x%.0s' {1..150})" | last | sed 's/x\{20,\}/…/'
echo "wrk GET /healthz on one node (HTTP on the same stack), 16 connections, 2 threads:"
wrk -t2 -c16 -d"${DURATION}s" --latency http://127.0.0.1:18001/healthz | grep -E "Requests/sec|50%|90%|99%"

echo "== load tool"
"$LOAD" storm "${NODES[@]}" --clients 50 --rounds 20 2>/dev/null
"$LOAD" join "${NODES[@]}" --sizes 2,10,100 --repetitions 50 2>/dev/null
"$LOAD" relay "${NODES[@]}" --pairs 16 --duration "$DURATION" 2>/dev/null
"$LOAD" relay "${NODES[@]}" --pairs 16 --rate 2000 --duration "$DURATION" 2>/dev/null
# Memory on fresh nodes (a node that ran the tests above reuses memory they freed).
"$BIN/switchboard" serve --port 18003 --redis redis://127.0.0.1:$REDIS_PORT --node-id c &
C=$!
"$BIN/switchboard" serve --port 18004 --redis redis://127.0.0.1:$REDIS_PORT --node-id d &
D=$!
sleep 1
"$LOAD" idle --node http://127.0.0.1:18003 --streams "${STREAMS:-10000}" --hold 5 --pid $C --redis redis://127.0.0.1:$REDIS_PORT 2>/dev/null
"$LOAD" idle --node http://127.0.0.1:18004 --streams "${STREAMS:-10000}" --hold 5 --pid $D --plain-http 2>/dev/null

# Every node must stop cleanly on SIGTERM (a release build once crashed in its shutdown).
echo "== shutdown"
status=0
for pid in $A $B $C $D; do
  kill -TERM "$pid"
  if wait "$pid"; then echo "node $pid: exit 0"; else rc=$?; echo "node $pid: exit $rc" >&2; status=1; fi
done
exit $status
