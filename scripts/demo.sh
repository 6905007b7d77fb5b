#!/usr/bin/env bash
# Runs the whole pipeline on this machine: a private redis-server, redis-ws-bridge (:3000),
# topic-server with the dashboard (:8080), backend-app and data-feeder with the synthetic feed
# (control API :3100). Needs no network beyond loopback. Ctrl-C stops everything.
#
# Usage: scripts/demo.sh [--cluster] [--smoke]
#   --cluster three topic-server nodes instead of one, on :8081, :8082 and :8083 (/metrics on
#             9465, 9466, 9467), sharing one topic tree in the private redis-server
#             (topic-server --cluster): the dashboard is served by node 1, backend-app publishes
#             into node 2 (node 3 when node 2 goes away). No load balancer (docker-compose.yml's
#             `cluster` profile has one).
#   --smoke   start everything, check that a value reaches the topic server (with --cluster: that
#             the feed reaches node 1 through node 2, and that a value set through node 2 is seen
#             on nodes 1 and 3), then stop (exit 0/1)
# Environment: DEMO_INTERVAL (feed poll interval, default 1s), DEMO_HOST (default 127.0.0.1),
#              TOPIC_PORT (8080), BRIDGE_PORT (3000), FEEDER_PORT (3100), METRICS_PORT (9464, the
#              topic server's /metrics on 127.0.0.1), REDIS_PORT (a free one); with --cluster
#              NODE_PORTS ("8081 8082 8083") and NODE_METRICS_PORTS ("9465 9466 9467") instead of
#              TOPIC_PORT and METRICS_PORT; DEMO_RUN_DIR (the directory for the logs and Redis's
#              data, created if missing; default: a fresh one per run).
# State: redis-server keeps its data in the run directory with AOF on (deploy/redis.conf). With
#        --cluster every topic, value and view lives in Redis: a new run starts empty, unless
#        DEMO_RUN_DIR names an earlier run's directory (the script prints it), which brings that
#        run's topics, values and views back. Without --cluster the topic server holds them in
#        memory only: every run starts empty.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

smoke=0
cluster=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --cluster) cluster=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument '$arg'; usage: scripts/demo.sh [--cluster] [--smoke]" ;;
  esac
done
host="${DEMO_HOST:-127.0.0.1}"
bridge_port="${BRIDGE_PORT:-3000}"
feeder_port="${FEEDER_PORT:-3100}"
interval="${DEMO_INTERVAL:-1s}"
# The topic servers: their log names, WebSocket ports and metrics ports. The first serves the
# dashboard.
if [ "$cluster" = 1 ]; then
  topic_names=(topic-node-1 topic-node-2 topic-node-3)
  read -r -a topic_ports <<<"${NODE_PORTS:-8081 8082 8083}"
  read -r -a metrics_ports <<<"${NODE_METRICS_PORTS:-9465 9466 9467}"
  (( ${#topic_ports[@]} == 3 && ${#metrics_ports[@]} == 3 )) \
    || die "NODE_PORTS and NODE_METRICS_PORTS take three ports each (one per node)"
  port_vars="NODE_PORTS/NODE_METRICS_PORTS"
else
  topic_names=(topic-server)
  topic_ports=("${TOPIC_PORT:-8080}")
  metrics_ports=("${METRICS_PORT:-9464}")
  port_vars="TOPIC_PORT/METRICS_PORT"
fi
dashboard_port="${topic_ports[0]}"

command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install Rust from https://rustup.rs and run this again."
command -v curl >/dev/null 2>&1 || apt_install curl || die "curl is needed to check the services; install it."
ensure_build_tools
ensure_redis
ensure_web_deps "$root" || warn "the dashboard will load without its chart library"

for p in "${topic_ports[@]}" "${metrics_ports[@]}" "$bridge_port" "$feeder_port"; do
  port_busy "$p" && die "port $p is already in use; stop what uses it or set $port_vars/BRIDGE_PORT/FEEDER_PORT."
done
redis_port="${REDIS_PORT:-$(free_port)}"
redis_url="redis://127.0.0.1:$redis_port/"

say "building (release)"
cargo build --release -p topic-server -p topic-cli -p redis-ws-bridge -p backend-app -p data-feeder
bin="${CARGO_TARGET_DIR:-$root/target}/release"

if [ -n "${DEMO_RUN_DIR:-}" ]; then
  mkdir -p "$DEMO_RUN_DIR"
  run_dir="$(cd "$DEMO_RUN_DIR" && pwd)"
else
  run_dir="$(mktemp -d "${TMPDIR:-/tmp}/redis-topic-demo.XXXXXX")"
fi
pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    say "stopping"
    stop_processes pids
  fi
  say "logs kept in $run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name, command...
  start_logged "$run_dir" "$@"
  say "started $1 (pid ${pids[-1]}, log $run_dir/$1.log)"
}

# The KEY=VALUE lines of a demo credentials file (deploy/demo-credentials/) that give a topic
# client its identity, for env(1) or export.
credentials() {
  local key value
  while IFS='=' read -r key value; do
    case "$key" in TOPIC_PRINCIPAL|TOPIC_CREDENTIALS) printf '%s=%s\n' "$key" "$value" ;; esac
  done <"$1"
}

# Waits up to 30 s for topic $2 on the topic server at $1 to have a value that is not null,
# contains $3 (if given) and is not $4 (if given: what an earlier fetch printed), and prints it
# as topic-cli fetch does (PATH<TAB>VALUE). Fetches with the identity in the environment
# (anonymous unless TOPIC_PRINCIPAL is set).
await_value() {
  local url="$1" topic="$2" contains="${3:-}" unlike="${4:-}" out _
  for _ in $(seq 150); do
    if out="$("$bin/topic-cli" --url "$url" fetch "$topic" 2>/dev/null)" && [ -n "$out" ] \
      && [ "${out#*$'\t'}" != "null" ] && [[ "$out" == *"$contains"* ]] && [ "$out" != "$unlike" ]; then
      printf '%s\n' "$out"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# The cluster's promise, checked: a value set through node 2 (as admin) is seen on nodes 1 and 3.
check_cluster() {
  local token node out
  token="$(random_token)"
  say "setting demo/cluster-check through node 2; waiting for it on nodes 1 and 3"
  (
    export "${admin_env[@]}"
    "$bin/topic-cli" --url "ws://$host:${topic_ports[1]}" add demo/cluster-check STRING >/dev/null \
      && "$bin/topic-cli" --url "ws://$host:${topic_ports[1]}" set demo/cluster-check "\"$token\"" >/dev/null
  ) || die "could not set demo/cluster-check through node 2 (see $run_dir/topic-node-2.log)"
  for node in 1 3; do
    out="$(export "${admin_env[@]}"; await_value "ws://$host:${topic_ports[node - 1]}" demo/cluster-check "$token")" \
      || die "node $node does not see the value set through node 2 (logs in $run_dir)"
    say "node $node sees it: $out"
  done
  (export "${admin_env[@]}"; "$bin/topic-cli" --url "ws://$host:${topic_ports[2]}" remove demo/cluster-check >/dev/null) \
    || warn "could not remove demo/cluster-check through node 3"
}

start redis redis-server "$root/deploy/redis.conf" --port "$redis_port" --bind 127.0.0.1 --dir "$run_dir"
wait_redis "$redis_port" || die "redis-server did not start (see $run_dir/redis.log)"

# Security (docs/security.md): anonymous sessions (the dashboard) may only read redis/...;
# backend-app authenticates as `backend`; `admin` may do everything.
start_topic_server() { # name, port, metrics port, more flags...
  local name="$1" port="$2" metrics="$3"; shift 3
  start "$name" "$bin/topic-server" --listen "$host:$port" --web-dir "$root/web" --views "$root/deploy/views.txt" \
    --security "$root/deploy/security.toml" --metrics-listen "127.0.0.1:$metrics" "$@"
}
dashboard_origins="http://$host:$dashboard_port,http://localhost:$dashboard_port,http://127.0.0.1:$dashboard_port"
if [ "$cluster" = 1 ]; then
  # One topic tree in Redis for the three nodes, each installing the same views (same name:
  # replaced). Nodes 2 and 3 accept the dashboard of node 1 (?topics= may list them).
  for i in 0 1 2; do
    start_topic_server "${topic_names[i]}" "${topic_ports[i]}" "${metrics_ports[i]}" \
      --cluster "$redis_url" --node-id "node-$((i + 1))" --allowed-origins "$dashboard_origins"
  done
else
  start_topic_server topic-server "${topic_ports[0]}" "${metrics_ports[0]}"
fi
# The bridge publishes only for clients presenting this token (the feeder); everyone else,
# the dashboard included, reads. A fresh one per run, handed over in the environment.
publish_token="$(random_token)"
start redis-ws-bridge env DEMO_PUBLISH_TOKEN="$publish_token" "$bin/redis-ws-bridge" \
  --listen "$host:$bridge_port" --redis-url "$redis_url" --publish-token-env DEMO_PUBLISH_TOKEN
for i in "${!topic_names[@]}"; do
  wait_http "http://$host:${topic_ports[i]}/healthz" 30 || die "${topic_names[i]} did not come up (see $run_dir/${topic_names[i]}.log)"
done
wait_http "http://$host:$bridge_port/healthz" 30 || die "redis-ws-bridge did not come up (see $run_dir/redis-ws-bridge.log)"

# The backend publishes into node 2 (node 3 its failover) in a cluster, so the dashboard's
# values on node 1 have crossed Redis. With a kept DEMO_RUN_DIR the topic has a value already:
# the check below waits for a newer one.
dashboard_url="ws://$host:$dashboard_port"
if [ "$cluster" = 1 ]; then
  backend_targets="ws://$host:${topic_ports[1]},ws://$host:${topic_ports[2]}"
else
  backend_targets="$dashboard_url"
fi
earlier="$("$bin/topic-cli" --url "$dashboard_url" fetch redis/bitcoin 2>/dev/null || true)"
# As in the tutorial, the backend app reads the channel through the bridge's WebSocket.
# backend-app's principal and its DEMO-ONLY password (public; see deploy/demo-credentials/).
mapfile -t backend_env < <(credentials "$root/deploy/demo-credentials/backend.env")
mapfile -t admin_env < <(credentials "$root/deploy/demo-credentials/admin.env")
(( ${#backend_env[@]} == 2 && ${#admin_env[@]} == 2 )) || die "deploy/demo-credentials/ is incomplete"
start backend-app env "${backend_env[@]}" "$bin/backend-app" --from "ws://$host:$bridge_port/" --topic-server "$backend_targets" --topic redis/bitcoin
# The dashboard (served by the topic server) calls the feeder's control API from the browser.
start data-feeder env DEMO_PUBLISH_TOKEN="$publish_token" "$bin/data-feeder" --source synthetic --interval "$interval" \
  --sink "ws://$host:$bridge_port/" --publish-token-env DEMO_PUBLISH_TOKEN --control-listen "$host:$feeder_port" \
  --allowed-origins "$dashboard_origins"
wait_http "http://$host:$feeder_port/healthz" 30 || die "data-feeder did not come up (see $run_dir/data-feeder.log)"

say "waiting for the first value on topic redis/bitcoin${earlier:+ (newer than the one kept from an earlier run)}"
out="$(await_value "$dashboard_url" redis/bitcoin "" "$earlier")" || die "no value reached the topic server (logs in $run_dir)"
printf '%s\n' "$out" | cut -c1-160
if [ "$cluster" = 1 ]; then
  check_cluster
  for i in 0 1 2; do
    view="$("$bin/topic-cli" --url "ws://$host:${topic_ports[i]}" fetch 'redis/views/usd' 2>/dev/null || true)"
    printf 'node %s: %s\n' "$((i + 1))" "${view:-redis/views/usd has no value yet}"
  done
else
  "$bin/topic-cli" --url "$dashboard_url" fetch 'redis/views/usd' 2>/dev/null || true
fi

if [ "$smoke" = 1 ]; then
  say "smoke check passed"
  exit 0
fi

if [ "$cluster" = 1 ]; then
  p1="${topic_ports[0]}" p2="${topic_ports[1]}" p3="${topic_ports[2]}"
  cat <<MSG

  Dashboard:       http://$host:$p1/   (served by node 1, and connected to it)
                   http://$host:$p1/?topics=ws://$host:$p1/ws,ws://$host:$p2/ws,ws://$host:$p3/ws
                   (the same, moving on to the next node when its own goes away)
  Topic servers:   ws://$host:$p1  ws://$host:$p2  ws://$host:$p3   (one topic tree, in Redis;
                   try: $bin/topic-cli --url ws://$host:$p3 subscribe redis/bitcoin)
  backend-app:     publishes into node 2 (ws://$host:$p2), node 3 when node 2 goes away
  Redis bridge:    ws://$host:$bridge_port/
  Feeder control:  http://$host:$feeder_port/status
  Metrics:         http://127.0.0.1:${metrics_ports[0]}/metrics  http://127.0.0.1:${metrics_ports[1]}/metrics  http://127.0.0.1:${metrics_ports[2]}/metrics
  Security:        deploy/security.toml (anonymous: read redis/...; kill -HUP a node to reload it there)
  As admin:        set -a; . deploy/demo-credentials/admin.env; set +a; $bin/topic-cli --url ws://$host:$p2 view list
  Redis:           $redis_url  (append-only file in $run_dir)
  Keep the state:  DEMO_RUN_DIR=$run_dir scripts/demo.sh --cluster
  Logs:            $run_dir

  Press Ctrl-C to stop everything.
MSG
else
  cat <<MSG

  Dashboard:       http://$host:$dashboard_port/
  Topic server:    ws://$host:$dashboard_port   (try: $bin/topic-cli subscribe redis/bitcoin)
  Redis bridge:    ws://$host:$bridge_port/
  Feeder control:  http://$host:$feeder_port/status
  Metrics:         http://127.0.0.1:${metrics_ports[0]}/metrics
  Security:        deploy/security.toml (anonymous: read redis/...; kill -HUP the topic-server to reload)
  As admin:        set -a; . deploy/demo-credentials/admin.env; set +a; $bin/topic-cli view list
  Redis:           $redis_url
  Logs:            $run_dir

  Press Ctrl-C to stop everything.
MSG
fi
wait -n "${pids[@]}" || true
warn "a component exited; stopping the demo (logs in $run_dir)"
for f in "$run_dir"/*.log; do echo "--- $f"; tail -5 "$f"; done
