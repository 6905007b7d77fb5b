#!/usr/bin/env bash
# Chaos testing of the whole pipeline: builds the release binaries, starts the demo pipeline
# (as scripts/demo.sh does, on free loopback ports) and kills (kill -9) and restarts each tier
# and redis-server in turn, and pauses each (SIGSTOP 3 s, SIGCONT). Only the killed process is
# restarted (the driver plays systemd/docker's restart policy); every other tier must recover
# by itself. After each fault the dashboard's topic (redis/bitcoin, watched by a client on the
# dashboard's node) must get a new value within 5 s and one produced after the fault's end (not
# a backlog) soon after, every process must run and every /healthz must answer; after the last
# fault values must still flow. Prints a Markdown table of faults and recovery times (also written to
# target/release/chaos-report.md); exits 1 when a fault did not recover, with the logs' tails,
# and 130 when interrupted (every process it started stopped first).
#
# Usage: scripts/chaos.sh [--cluster|--both] [--short] [--rounds N]
#   --cluster   three topic-server nodes sharing one topic tree in Redis (demo.sh --cluster):
#               the dashboard on node 1, backend-app on node 2 with node 3 as its failover
#   --both      a single-node run, then a cluster run
#   --short     one fault per tier (kill -9 and restart), as scripts/test.sh runs it
#   --rounds N  run the whole schedule N times (default 1)
# Other flags go to the driver as they are (target/release/chaos --help).
# Environment: CHAOS_SKIP_BUILD=1 uses the binaries already in ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
  esac
done

command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install Rust from https://rustup.rs and run this again."
ensure_build_tools
ensure_redis
bin="${CARGO_TARGET_DIR:-$root/target}/release"
if [ "${CHAOS_SKIP_BUILD:-0}" != 1 ]; then
  say "building (release)"
  cargo build --release -p topic-server -p redis-ws-bridge -p backend-app -p data-feeder -p chaos
fi
say "chaos: $*"
# exec: the driver takes this process's place, so a SIGTERM sent to the script reaches it; on
# SIGINT/SIGTERM it kills and reaps every process it started and exits 130. Nothing runs in the
# background here, so there is nothing for a trap to clean up.
exec "$bin/chaos" --root "$root" --bin-dir "$bin" --report "$bin/chaos-report.md" "$@"
