#!/usr/bin/env bash
# Soak test: topic-server (one node, or three nodes of a cluster on a private redis-server) under
# 10k WebSocket subscribers for an hour: 5% of them reconnect every minute, 1% never read, a feed
# publishes 10 updates/s over 100 topics and two views. Every 10 s it samples each server's RSS,
# open descriptors, CPU, queued bytes and connections, and the delivery rate and latency, into
# samples.csv (and samples.png). Fails if a server's RSS grows by more than 5% after the warm-up,
# if a descriptor is still open once every subscriber has gone, or if deliveries stop.
#
# Usage: scripts/soak.sh [MINUTES] [--cluster] [--subscribers N] [--out DIR] [--no-build]
#                        [--no-chart] [-- more soak flags (target/release/soak --help)]
#   MINUTES        how long to run (default 60; fractions allowed)
#   --cluster      three topic-server nodes with --cluster on one redis-server (watched too;
#                  logs of 100 changes per partition, a 10-minute warm-up in runs of 30+ min)
#   --subscribers  subscriber connections (default 10000)
#   --out DIR      where samples.csv, samples.png, summary.md/json and the logs go
#                  (default target/soak/single or target/soak/cluster)
#   --no-build     use the release binaries already built
#   --no-chart     no samples.png (and no attempt to install matplotlib for it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

minutes=60
cluster=0
subscribers=10000
out=""
build=1
chart=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) cluster=1 ;;
    --subscribers) subscribers="${2:?--subscribers needs a number}"; shift ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --no-build) build=0 ;;
    --no-chart) chart=0 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    [0-9]*) minutes="$1" ;;
    *) die "unknown argument '$1'; usage: scripts/soak.sh [MINUTES] [--cluster] [--subscribers N] [--out DIR] [--no-build] [--no-chart]" ;;
  esac
  shift
done
[[ "$subscribers" =~ ^[0-9]+$ ]] || die "--subscribers takes a number, not '$subscribers'"

mode=single
[ "$cluster" = 1 ] && mode=cluster
target="${CARGO_TARGET_DIR:-$root/target}"
out="${out:-$target/soak/$mode}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
bin="$target/release"

command -v curl >/dev/null 2>&1 || apt_install curl || die "curl is needed to check the servers; install it."
[ "$cluster" = 1 ] && ensure_redis
if [ "$chart" = 1 ] && ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
  say "installing matplotlib for the chart"
  python3 -m pip install --quiet matplotlib >/dev/null 2>&1 || warn "matplotlib unavailable: no PNG chart"
fi
# Every subscriber is a descriptor in this shell's children (the soak process, the servers).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) > subscribers + 1000 )) \
  || die "the open-file limit ($(ulimit -n)) is too low for $subscribers subscribers; use --subscribers or raise it"

if [ "$build" = 1 ]; then
  ensure_build_tools
  say "building (release)"
  cargo build --release -p topic-server -p soak
fi
for b in topic-server soak; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing: run without --no-build"
done

pids=()
# Redis's data (cluster mode) lives only as long as the run.
data_dir="$(mktemp -d "${TMPDIR:-/tmp}/soak-redis.XXXXXX")"
cleanup() {
  trap - INT TERM EXIT
  stop_processes pids
  rm -rf "$data_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start() { start_logged "$out" "$@"; }

urls=()
watch=()
defaults=()
# A topic server on free ports; its connection limit leaves room for every subscriber.
start_node() { # name, more flags...
  local name="$1" port metrics; shift
  port="$(free_port)"
  metrics="$(free_port)"
  start "$name" "$bin/topic-server" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
    --web-dir "$root/web" --max-connections $((subscribers + 1000)) "$@"
  wait_http "http://127.0.0.1:$port/healthz" 60 || die "$name did not come up (see $out/$name.log)"
  urls+=("ws://127.0.0.1:$port/ws")
  watch+=("$name:${pids[-1]}:http://127.0.0.1:$metrics/metrics")
}

if [ "$cluster" = 1 ]; then
  redis_port="$(free_port)"
  start redis redis-server "$root/deploy/redis.conf" --port "$redis_port" --bind 127.0.0.1 --dir "$data_dir"
  wait_redis "$redis_port" || die "redis-server did not start (see $out/redis.log)"
  watch+=("redis:${pids[-1]}")
  # Every change is also appended to its partition's log in Redis, bounded by
  # --cluster-log-length; at the default (10,000 per partition) this feed would take hours to
  # fill it, and Redis's memory would grow all along by design. With 100 (the least) the logs
  # are full a few minutes in, so growth after the warm-up (10 minutes in a long run) is a leak.
  for i in 1 2 3; do
    start_node "node$i" --cluster "redis://127.0.0.1:$redis_port/" --node-id "soak-node-$i" \
      --cluster-log-length 100
  done
  awk "BEGIN { exit !($minutes >= 30) }" && defaults+=(--warmup-minutes 10)
else
  start_node topic-server
fi

say "soak ($mode): $minutes min, $subscribers subscribers; samples in $out/samples.csv"
status=0
(IFS=,; "$bin/soak" --url "${urls[*]}" --watch "${watch[*]}" --minutes "$minutes" \
  --subscribers "$subscribers" --out "$out" "${defaults[@]}" "${extra[@]}") || status=$?
if [ "$chart" = 1 ] && [ -f "$out/samples.csv" ] && python3 -c 'import matplotlib' >/dev/null 2>&1; then
  python3 "$root/scripts/lib/soak_plot.py" "$out/samples.csv" "$out/samples.png" "$mode, $minutes min, $subscribers subscribers" \
    || warn "the chart could not be drawn"
fi
if [ "$status" = 0 ]; then
  say "soak passed ($out/summary.md)"
else
  warn "soak failed ($out/summary.md, logs in $out)"
fi
exit "$status"
