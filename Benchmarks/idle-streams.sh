#!/usr/bin/env bash
# Node memory per idle stream, in one run: for each build given, a fresh node on a redis-server
# of its own holds, in turn,
#   - 10,000 streams, each on a fresh connection (the load tool's `idle`);
#   - 18,000 streams (this machine caps a process at 20,000 open files);
#   - 10,000 streams each opened on the keep-alive connection that fetched its token
#     (POST /access first), as a page's EventSource may be;
#   - 10,000 plain keep-alive connections that each made one GET /healthz: the HTTP stack's
#     own cost per connection, the floor a stream was measured against.
# Each row: the node's RSS growth 5 s after the last one opened, divided by their number; the
# time to open them; the node CPU of one ping round to all of them (pings every second here).
# Redis connections stay constant (connected_clients before and after).
#   swift build -c release --product switchboard --product switchboard-load
#   Benchmarks/idle-streams.sh .build/release [BEFORE_BIN_DIR]
set -euo pipefail
. "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."

[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 BIN_DIR [BEFORE_BIN_DIR] (folders holding switchboard; the first also switchboard-load)" >&2; exit 2; }
for tool in switchboard switchboard-load; do [ -x "$1/$tool" ] || { echo "no $tool in $1" >&2; exit 2; }; done
[ $# -lt 2 ] || [ -x "$2/switchboard" ] || { echo "no switchboard in $2" >&2; exit 2; }
LOAD="$1/switchboard-load"
SMALL=${SMALL:-10000}
LARGE=${LARGE:-18000}

WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
export SWITCHBOARD_TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWITCHBOARD_LOG_LEVEL=error SWITCHBOARD_PING_INTERVAL=1
export SWITCHBOARD_RELAY_RATE=0 SWITCHBOARD_JOIN_RATE=0 # 18,000 tokens from one address

REDIS_PORT=16501
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
sleep 0.5

# One measurement on a fresh node (one that held streams before reuses the memory they freed).
measure() { # bin, load-tool options...
  local bin=$1
  shift
  "$bin/switchboard" serve --port 18501 --redis redis://127.0.0.1:$REDIS_PORT --node-id idle &
  local node=$!
  wait_ready http://127.0.0.1:18501
  "$LOAD" idle --node http://127.0.0.1:18501 --hold 5 --pid $node --ping-interval 1 "$@" 2>/dev/null | tail -1
  kill -TERM $node
  wait $node
}

echo "== $(nproc) cores, $(date -u +%F), stolen by the host during each row in brackets"
echo "held  open_s  node_rss_before_mib  node_rss_after_mib  kib_each  hold_cpu_ms  ping_round_ms  redis_clients_before  redis_clients_after"
builds=("$1")
[ $# -lt 2 ] || builds+=("$2")
for bin in "${builds[@]}"; do
  echo "-- $bin"
  for options in "--streams $SMALL --redis redis://127.0.0.1:$REDIS_PORT" "--streams $LARGE --redis redis://127.0.0.1:$REDIS_PORT" \
    "--streams $SMALL --after-access --redis redis://127.0.0.1:$REDIS_PORT" "--streams $SMALL --plain-http"; do
    before=$(steal)
    # shellcheck disable=SC2086
    row=$(measure "$bin" $options)
    echo "$row  [$(stolen_percent "$before" "$(steal)")% stolen]"
  done
done
