#!/usr/bin/env bash
# One CPU profile of a running process as a flame graph:
#
#   bench/profile.sh <pid> <seconds> <title> <out.svg> [dwarf]
#
# `perf record -g` of <pid> (all its threads) for <seconds>, then inferno's flame graph.
# `dwarf` unwinds with DWARF (Rust release builds have no frame pointers: deeper,
# truer stacks, bigger files); without it, frame pointers (right for C such as nginx
# and Postgres). Needs perf (apt-get install -y linux-perf) and inferno
# (cargo install inferno).
set -euo pipefail
pid=$1 seconds=$2 title=$3 out=$4 mode=${5:-fp}
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "profile: needs $tool (apt-get install -y linux-perf; cargo install inferno)" >&2; exit 1; }
done
data=$(mktemp)
trap 'rm -f "$data"' EXIT
callgraph=(-g)
[ "$mode" = dwarf ] && callgraph=(--call-graph dwarf,16384)
perf record -F 499 "${callgraph[@]}" -p "$pid" -o "$data" -- sleep "$seconds" >/dev/null 2>&1 || true
perf script -i "$data" 2>/dev/null | inferno-collapse-perf \
  | inferno-flamegraph --title "$title" --minwidth 0.2 > "$out"
echo "profile: $out"
