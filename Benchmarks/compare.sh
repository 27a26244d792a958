#!/usr/bin/env bash
# Compares this checkout's microbenchmarks with another revision's (default: main) on this
# machine, one after the other: builds REV in a worktree of its own, records its run as the
# baseline `base`, then runs this checkout's and checks it against that baseline with the
# thresholds in SwitchboardBenchmarks.swift. Exits non-zero if a benchmark regressed beyond
# them. Two cold release builds the first time (about 15 minutes each here), so not in CI.
#   Benchmarks/compare.sh [REV]
set -euo pipefail
cd "$(dirname "$0")"
REV=${1:-main}
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/base" 2>/dev/null || true; rm -rf "$WORK"' EXIT
git worktree add --detach "$WORK/base" "$REV" >/dev/null
echo "== $REV ($(git rev-parse --short "$REV")): recording the baseline"
(cd "$WORK/base/Benchmarks" && swift package --disable-sandbox --allow-writing-to-package-directory benchmark baseline update base --no-progress)
rm -rf .benchmarkBaselines/SwitchboardBenchmarks/base
mkdir -p .benchmarkBaselines/SwitchboardBenchmarks
cp -r "$WORK/base/Benchmarks/.benchmarkBaselines/SwitchboardBenchmarks/base" .benchmarkBaselines/SwitchboardBenchmarks/
echo "== this checkout: checking against $REV"
swift package --disable-sandbox benchmark baseline check base --no-progress
