#!/usr/bin/env bash
# What passing data through a Lua script costs Redis, measured hot: each case runs 5,000 times
# with redis-benchmark against a private redis-server, and Redis's own usec_per_call for
# EVALSHA (or the command) is printed. The room holds 99 members' user JSON (about 6 KB), as
# in the README's join into a room of 100; the argument is the same 6 KB.
#   Benchmarks/script-costs.sh
set -euo pipefail

PORT=${PORT:-16490}
WORK=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
R=(redis-cli -p "$PORT")
for _ in $(seq 50); do "${R[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done

for i in $(seq 1 99); do
  "${R[@]}" hset "m{r}" "member-$i-0123456789abcdef" "{\"id\":\"member-$i-0123456789abcdef\",\"username\":\"member $i\"}" >/dev/null
done
BIG=$(python3 -c "print('\n'.join('{\"id\":\"member-%04d-0123456789abcdef\",\"username\":\"member %d\"}' % (i, i) for i in range(99)))")

per_call() { "${R[@]}" info commandstats | grep "^cmdstat_$1:" | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/'; }

# Runs one command 5,000 times and prints Redis's µs per call of it.
measure() {
  local label=$1 command=$2; shift 2
  "${R[@]}" config resetstat >/dev/null
  redis-benchmark -p "$PORT" -n 5000 -c 1 -q "$@" >/dev/null
  printf '%8s µs  %s\n' "$(per_call "$command")" "$label"
}
script() { "${R[@]}" script load "$1"; }

echo "== 99 members' user JSON ($(printf %s "$BIG" | wc -c) bytes), µs per call, hot"
measure "HVALS as a command" hvals hvals "m{r}"
measure "HVALS from a script, returned as a table" evalsha evalsha "$(script "return redis.call('HVALS', KEYS[1])")" 1 "m{r}"
measure "HVALS from a script, joined into one string" evalsha evalsha "$(script "return table.concat(redis.call('HVALS', KEYS[1]), '\n')")" 1 "m{r}"
measure "a script given no argument" evalsha evalsha "$(script "return 1")" 1 "m{r}"
measure "a script given the 6 KB argument" evalsha evalsha "$(script "return 1")" 1 "m{r}" "$BIG"
measure "a script that builds one 6 KB string from it" evalsha evalsha "$(script "local m = 'joined\n' .. ARGV[1]; return 1")" 1 "m{r}" "$BIG"
measure "a script that builds two" evalsha evalsha "$(script "local m = 'joined\n' .. ARGV[1]; local n = '1-0\n' .. m; return 1")" 1 "m{r}" "$BIG"
