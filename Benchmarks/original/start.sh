#!/usr/bin/env bash
# The original article's design as a benchmark anchor: a redis-server of its own and NODES
# (default 2) processes of Benchmarks/original/server.js (Express + node-redis, one Redis
# connection per stream) on ports PORT, PORT+1, … (default 8091). Installs Debian's nodejs,
# node-express and node-redis if missing, prints the node URLs and the Node version, and
# stops everything it started when it exits (Ctrl-C). Drive it with the load tool:
#   Benchmarks/original/start.sh &
#   switchboard-load relay --node http://127.0.0.1:8091 --node http://127.0.0.1:8092 --pairs 16 --duration 10
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NODES=${NODES:-2}
PORT=${PORT:-8091}
REDIS_PORT=${REDIS_PORT:-6391}

if ! command -v node >/dev/null || [ ! -d /usr/share/nodejs/express ] || [ ! -d /usr/share/nodejs/redis ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs node-express node-redis >/dev/null
fi
export NODE_PATH=/usr/share/nodejs  # Debian's packaged modules
export TOKEN_SECRET=${TOKEN_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}

WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "original design, node $(node --version), redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on port $REDIS_PORT"
for i in $(seq 0 $((NODES - 1))); do
  PORT=$((PORT + i)) REDIS_URL="redis://127.0.0.1:$REDIS_PORT" node "$HERE/server.js" >"$WORK/node-$i.log" 2>&1 &
  PIDS+=($!)
done
for i in $(seq 0 $((NODES - 1))); do
  for _ in $(seq 100); do
    curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"username":"probe"}' "http://127.0.0.1:$((PORT + i))/access" && break
    sleep 0.1
  done
  echo "node pid ${PIDS[$((i + 1))]}: http://127.0.0.1:$((PORT + i))"
done
wait
