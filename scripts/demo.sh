#!/usr/bin/env bash
# Runs the whole pipeline on this machine: a private redis-server, redis-ws-bridge (:3000),
# topic-server with the dashboard (:8080), backend-app and data-feeder with the synthetic feed
# (control API :3100). Needs no network beyond loopback. Ctrl-C stops everything.
#
# Usage: scripts/demo.sh [--smoke]
#   --smoke   start everything, check that a value reaches the topic server, then stop (exit 0/1)
# Environment: DEMO_INTERVAL (feed poll interval, default 1s), DEMO_HOST (default 127.0.0.1),
#              TOPIC_PORT (8080), BRIDGE_PORT (3000), FEEDER_PORT (3100), METRICS_PORT (9464, the
#              topic server's /metrics on 127.0.0.1), REDIS_PORT (a free one).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
host="${DEMO_HOST:-127.0.0.1}"
topic_port="${TOPIC_PORT:-8080}"
bridge_port="${BRIDGE_PORT:-3000}"
feeder_port="${FEEDER_PORT:-3100}"
metrics_port="${METRICS_PORT:-9464}"
interval="${DEMO_INTERVAL:-1s}"

command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install Rust from https://rustup.rs and run this again."
command -v curl >/dev/null 2>&1 || apt_install curl || die "curl is needed to check the services; install it."
ensure_redis
ensure_web_deps "$root" || warn "the dashboard will load without its chart library"

for p in "$topic_port" "$bridge_port" "$feeder_port" "$metrics_port"; do
  port_busy "$p" && die "port $p is already in use; stop what uses it or set TOPIC_PORT/BRIDGE_PORT/FEEDER_PORT/METRICS_PORT."
done
redis_port="${REDIS_PORT:-$(free_port)}"

say "building (release)"
cargo build --release -p topic-server -p topic-cli -p redis-ws-bridge -p backend-app -p data-feeder
bin="${CARGO_TARGET_DIR:-$root/target}/release"

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/redis-topic-demo.XXXXXX")"
pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then
    say "stopping"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  say "logs kept in $run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name, command...
  local name="$1"; shift
  "$@" >"$run_dir/$name.log" 2>&1 &
  pids+=("$!")
  say "started $name (pid $!, log $run_dir/$name.log)"
}

start redis redis-server "$root/deploy/redis.conf" --port "$redis_port" --bind 127.0.0.1 --dir "$run_dir"
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || die "redis-server did not start (see $run_dir/redis.log)"

# Security (docs/security.md): anonymous sessions (the dashboard) may only read redis/...;
# backend-app authenticates as `backend`; `admin` may do everything.
start topic-server "$bin/topic-server" --listen "$host:$topic_port" --web-dir "$root/web" --views "$root/deploy/views.txt" \
  --security "$root/deploy/security.toml" --metrics-listen "127.0.0.1:$metrics_port"
# The bridge publishes only for clients presenting this token (the feeder); everyone else,
# the dashboard included, reads. A fresh one per run, handed over in the environment.
publish_token="$(random_token)"
start redis-ws-bridge env DEMO_PUBLISH_TOKEN="$publish_token" "$bin/redis-ws-bridge" \
  --listen "$host:$bridge_port" --redis-url "redis://127.0.0.1:$redis_port/" --publish-token-env DEMO_PUBLISH_TOKEN
wait_http "http://$host:$topic_port/healthz" 30 || die "topic-server did not come up (see $run_dir/topic-server.log)"
wait_http "http://$host:$bridge_port/healthz" 30 || die "redis-ws-bridge did not come up (see $run_dir/redis-ws-bridge.log)"

# As in the tutorial, the backend app reads the channel through the bridge's WebSocket.
# backend-app's principal and its DEMO-ONLY password (public; see deploy/demo-credentials/).
backend_env=()
while IFS='=' read -r key value; do
  case "$key" in TOPIC_PRINCIPAL|TOPIC_CREDENTIALS) backend_env+=("$key=$value") ;; esac
done <"$root/deploy/demo-credentials/backend.env"
start backend-app env "${backend_env[@]}" "$bin/backend-app" --from "ws://$host:$bridge_port/" --topic-server "ws://$host:$topic_port" --topic redis/bitcoin
# The dashboard (served by the topic server) calls the feeder's control API from the browser.
start data-feeder env DEMO_PUBLISH_TOKEN="$publish_token" "$bin/data-feeder" --source synthetic --interval "$interval" \
  --sink "ws://$host:$bridge_port/" --publish-token-env DEMO_PUBLISH_TOKEN --control-listen "$host:$feeder_port" \
  --allowed-origins "http://$host:$topic_port,http://localhost:$topic_port,http://127.0.0.1:$topic_port"
wait_http "http://$host:$feeder_port/healthz" 30 || die "data-feeder did not come up (see $run_dir/data-feeder.log)"

say "waiting for the first value on topic redis/bitcoin"
ok=0
for _ in $(seq 150); do
  if out="$("$bin/topic-cli" --url "ws://$host:$topic_port" fetch redis/bitcoin 2>/dev/null)" && [ -n "$out" ] && [ "${out#*$'\t'}" != "null" ]; then
    ok=1; break
  fi
  sleep 0.2
done
[ "$ok" = 1 ] || die "no value reached the topic server (logs in $run_dir)"
printf '%s\n' "$out" | cut -c1-160
"$bin/topic-cli" --url "ws://$host:$topic_port" fetch 'redis/views/usd' 2>/dev/null || true

if [ "$smoke" = 1 ]; then
  say "smoke check passed"
  exit 0
fi

cat <<MSG

  Dashboard:       http://$host:$topic_port/
  Topic server:    ws://$host:$topic_port   (try: $bin/topic-cli subscribe redis/bitcoin)
  Redis bridge:    ws://$host:$bridge_port/
  Feeder control:  http://$host:$feeder_port/status
  Metrics:         http://127.0.0.1:$metrics_port/metrics
  Security:        deploy/security.toml (anonymous: read redis/...; kill -HUP the topic-server to reload)
  As admin:        set -a; . deploy/demo-credentials/admin.env; set +a; $bin/topic-cli view list
  Redis:           redis://127.0.0.1:$redis_port/
  Logs:            $run_dir

  Press Ctrl-C to stop everything.
MSG
wait -n "${pids[@]}" || true
warn "a component exited; stopping the demo (logs in $run_dir)"
for f in "$run_dir"/*.log; do echo "--- $f"; tail -5 "$f"; done
