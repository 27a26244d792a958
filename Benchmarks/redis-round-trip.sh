#!/usr/bin/env bash
# What one round trip costs Redis in CPU, the floor under every sequential step of a join:
# redis-benchmark sends N PINGs on one connection, one at a time and then 5 pipelined, and
# Redis's own `used_cpu_sys + used_cpu_user` (INFO cpu) is read before and after each.
set -euo pipefail
N=${N:-20000}
WORK=$(mktemp -d)
PORT=16399
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
cpu() { redis-cli -p "$PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ { total += $2 } END { printf "%.6f", total }'; }
for pipeline in 1 5; do
  before=$(cpu)
  redis-benchmark -p "$PORT" -n "$N" -c 1 -P "$pipeline" -q -t ping_mbulk >/dev/null
  after=$(cpu)
  awk -v b="$before" -v a="$after" -v n="$N" -v p="$pipeline" \
    'BEGIN { printf "Redis CPU per PING, %d at a time on one connection: %.1f µs\n", p, (a - b) / n * 1e6 }'
done
