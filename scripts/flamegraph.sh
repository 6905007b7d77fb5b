#!/usr/bin/env bash
# CPU flamegraph of the topic server under one loadgen workload, rendered with inferno.
#
# Usage: scripts/flamegraph.sh NAME [--seconds S] [--no-build] [-- loadgen flags...]
#   NAME        the SVG is written to docs/perf/NAME.svg (folded stacks beside it, gzipped)
#   --seconds S how long perf samples the server, once the load runs (default 8)
#   loadgen flags default to the fanout-fixed workload: 10k subscribers, 5 updates/s
#                 (--connections 10000 --modes fixed-rate --rate 5 --duration 20)
# Needs perf (linux-perf) and inferno (installed with cargo if missing). Loopback only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

[ $# -ge 1 ] || die "usage: scripts/flamegraph.sh NAME [--seconds S] [--no-build] [-- loadgen flags...]"
name="$1"; shift
seconds=8 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift ;;
    --no-build) build=0 ;;
    --) shift; break ;;
    *) die "unknown option '$1'" ;;
  esac
  shift
done
load=("$@")
[ ${#load[@]} -gt 0 ] || load=(--connections 10000 --modes fixed-rate --rate 5 --duration 20)

command -v perf >/dev/null 2>&1 || die "perf is required (apt-get install linux-perf)"
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
  say "installing inferno (cargo install inferno)"
  cargo install inferno --locked >&2 || die "could not install inferno"
fi
bin="${CARGO_TARGET_DIR:-$root/target}/release"
[ "$build" = 0 ] || cargo build --release -p topic-server -p loadgen >&2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work="$(mktemp -d "${TMPDIR:-/tmp}/flamegraph.XXXXXX")"
server=""
cleanup() {
  [ -z "$server" ] || { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
port="$(free_port)"
"$bin/topic-server" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --web-dir "$root/web" \
  --max-connections 0 --max-connections-per-address 0 --max-requests-per-second 0 \
  >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do port_busy "$port" && break; sleep 0.05; done
"$bin/loadgen" --system topic-server --url "ws://127.0.0.1:$port/ws" --server-pid "$server" \
  --no-progress --out "$work/loadgen.json" "${load[@]}" >&2 &
loadgen=$!
# Sample once every connection is up and the load runs.
sleep 6
perf record -F 999 -g -p "$server" -o "$work/perf.data" -- sleep "$seconds" >/dev/null 2>&1 \
  || die "perf record failed (perf_event_paranoid?)"
wait "$loadgen" || warn "loadgen failed (see the figures in $work/loadgen.json)"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$work/folded.txt"
inferno-flamegraph --title "topic-server: $name" --width 1600 <"$work/folded.txt" >"docs/perf/$name.svg"
gzip -c "$work/folded.txt" >"docs/perf/$name.folded.gz"
say "wrote docs/perf/$name.svg ($(grep -c . "$work/folded.txt") distinct stacks)"
