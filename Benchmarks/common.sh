# Helpers the benchmark scripts share: source it (`. "$(dirname "$0")/common.sh"`).

# The first number after "KEY": in the load tool's --json output.
field() { sed -n "s/.*\"$1\" *: *\([0-9.]*\).*/\1/p" | head -1; }
# The machine's CPU ticks: stolen by the hypervisor, and all.
steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# The share of the machine's CPU time stolen between two `steal` readings, in percent: a VM
# whose host is busy gets less than its cores, and every figure measured meanwhile suffers.
stolen_percent() {
  local before=($1) after=($2)
  echo $(( (after[0] - before[0]) * 100 / (after[1] - before[1]) ))
}
# Waits up to 10 s until every node URL given answers GET /readyz.
wait_ready() {
  local url
  for url in "$@"; do
    for _ in $(seq 100); do curl -sf -o /dev/null "$url/readyz" && break; sleep 0.1; done
  done
}

# CPU ticks summed over the listed processes (every thread, user + system), from /proc.
cpu_sum() { for pid in "$@"; do awk '{print $14 + $15}' "/proc/$pid/stat"; done | paste -sd+ | bc; }
# `write`-family system calls made so far by the listed processes (every thread), from /proc.
writes_sum() { for pid in "$@"; do awk '/^syscw:/ {print $2}' "/proc/$pid/io"; done | paste -sd+ | bc; }
# µs of CPU per operation: (ticks before, ticks after, operations).
us_per() { echo $(( ($2 - $1) * 1000000 / $(getconf CLK_TCK) / ($3 > 0 ? $3 : 1) )); }
# The load tool's own CPU per operation, from a `time` line ("user system", TIMEFORMAT below)
# and the operations: (file, operations).
tool_us_per() { awk -v n="$2" '{print int(($1 + $2) * 1000000 / (n > 0 ? n : 1))}' "$1"; }
TIMEFORMAT='%3U %3S'  # for bash's `time`: a child's user and system seconds

