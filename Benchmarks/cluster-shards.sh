#!/usr/bin/env bash
# Switchboard on Redis Clusters of 1, 2 and 3 shards side by side: each cluster (primaries
# only, no replicas) gets two nodes of its own, and the load tool's closed-loop relay and
# churn (join + leave) runs go to one cluster after the other, ROUNDS times (default 2,
# alternating the order), so all see the same machine. Reports operations per second, and
# Redis CPU per operation on each shard and summed, from /proc, less each shard's idle CPU
# over as long (measured just before, in the same round). Each load runs twice: closed-loop
# (as fast as the fleet answers: the throughput, with batches per primary that thin out as
# the shards grow) and at a fixed rate (RELAY_RATE, CHURN_RATE: the same load, well below
# saturation, on every cluster: the cost per operation).
#   swift build -c release --product switchboard --product switchboard-load
#   Benchmarks/cluster-shards.sh .build/release
# On one machine all shards share its cores: what to read is that the work spreads over the
# shards and that the cost per operation does not grow with them, not a speed-up.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -eq 1 ] || { echo "usage: $0 BIN_DIR (a folder holding switchboard and switchboard-load)" >&2; exit 2; }
BIN=$1
for tool in switchboard switchboard-load; do [ -x "$BIN/$tool" ] || { echo "no $tool in $BIN" >&2; exit 2; }; done
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
RELAY_RATE=${RELAY_RATE:-1000}
CHURN_RATE=${CHURN_RATE:-200}
SHARDS=(1 2 3)

WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

export SWITCHBOARD_TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHBOARD_LOG_LEVEL=error
export SWITCHBOARD_RELAY_RATE=0 SWITCHBOARD_JOIN_RATE=0
TICKS=$(getconf CLK_TCK)

declare -A REDIS_PIDS SEEDS NODES
for n in "${SHARDS[@]}"; do
  ports=()
  for i in $(seq 0 $((n - 1))); do
    port=$((17000 + 10 * n + i))
    dir="$WORK/$n-$i"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 15000 &
    PIDS+=($!)
    REDIS_PIDS[$n]+=" $!"
    ports+=("$port")
  done
  sleep 0.5
  # By hand, since redis-cli --cluster create wants three primaries: the slots split evenly.
  for i in $(seq 0 $((n - 1))); do
    redis-cli -p "${ports[$i]}" CLUSTER SET-CONFIG-EPOCH $((i + 1)) >/dev/null
    redis-cli -p "${ports[$i]}" CLUSTER ADDSLOTSRANGE $((i * 16384 / n)) $(((i + 1) * 16384 / n - 1)) >/dev/null
    [ "$i" -gt 0 ] && redis-cli -p "${ports[$i]}" CLUSTER MEET 127.0.0.1 "${ports[0]}" >/dev/null
  done
  for _ in $(seq 100); do
    ok=1
    for port in "${ports[@]}"; do redis-cli -p "$port" CLUSTER INFO | grep -q cluster_state:ok || ok=0; done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  SEEDS[$n]=$(printf '127.0.0.1:%s,' "${ports[@]}" | sed 's/,$//')
  for k in 1 2; do
    port=$((18500 + 10 * n + k))
    "$BIN/switchboard" serve --port "$port" --redis-cluster "${SEEDS[$n]}" --node-id "c$n-$k" &
    PIDS+=($!)
    NODES[$n]+=" --node http://127.0.0.1:$port"
  done
done
sleep 2

# CPU seconds ×TICKS of each of the listed processes, space-separated.
cpu() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | xargs; }
# µs per operation for each shard, from CPU before/after and the operations done, less what
# the shard spends idle over as long (its cron and the cluster bus, measured in this round).
per_op() {
  local before=($1) after=($2) ops=$3 idle=($4) out="" total=0
  for i in "${!before[@]}"; do
    local us=$(( (after[i] - before[i] - idle[i]) * 1000000 / TICKS / (ops > 0 ? ops : 1) ))
    out+="$us "
    total=$((total + us))
  done
  echo "per shard: ${out% } µs, sum $total µs"
}
# CPU ticks each listed process spends over DURATION seconds with no load.
idle_cpu() {
  local before=($(cpu "$@"))
  sleep "$DURATION"
  local after=($(cpu "$@")) out=""
  for i in "${!before[@]}"; do out+="$((after[i] - before[i])) "; done
  echo "${out% }"
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(redis-server --version | cut -d' ' -f3), $(date -u +%F)"
for round in $(seq 1 "$ROUNDS"); do
  stolen_before=$(steal)
  ORDER=("${SHARDS[@]}")
  [ $((round % 2)) -eq 0 ] && ORDER=(3 2 1)
  for n in "${ORDER[@]}"; do
    # shellcheck disable=SC2086
    pids=(${REDIS_PIDS[$n]})
    idle=$(idle_cpu "${pids[@]}")
    for pace in closed fixed; do
      relay_rate=0 churn_rate=0
      [ "$pace" = fixed ] && relay_rate=$RELAY_RATE churn_rate=$CHURN_RATE
      before=$(cpu "${pids[@]}")
      # shellcheck disable=SC2086
      relay=$("$BIN/switchboard-load" relay ${NODES[$n]} --pairs 16 --rate "$relay_rate" --duration "$DURATION" --json 2>/dev/null)
      after=$(cpu "${pids[@]}")
      delivered=$(echo "$relay" | field delivered)
      echo "round $round, $n shard(s), $pace: relays $(echo "$relay" | field per_second | cut -d. -f1)/s, p99 $(echo "$relay" | field p99_ms) ms, lost $(echo "$relay" | field lost); Redis CPU per relay $(per_op "$before" "$after" "$delivered" "$idle")"
      before=$(cpu "${pids[@]}")
      # shellcheck disable=SC2086
      churn=$("$BIN/switchboard-load" churn ${NODES[$n]} --peers 32 --rate "$churn_rate" --duration "$DURATION" --json 2>/dev/null)
      after=$(cpu "${pids[@]}")
      joins=$(echo "$churn" | field joins)
      echo "round $round, $n shard(s), $pace: joins $(echo "$churn" | field per_second | cut -d. -f1)/s (each with a leave), p99 $(echo "$churn" | field p99_ms) ms, errors $(echo "$churn" | field errors); Redis CPU per join + leave $(per_op "$before" "$after" "$joins" "$idle")"
    done
  done
  echo "round $round: $(stolen_percent "$stolen_before" "$(steal)")% of the machine's CPU time stolen by the hypervisor"
done
