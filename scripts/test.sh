#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, all Rust tests (with real redis-server
# processes), the hostile-input suite and short chaos and soak passes against the release binaries, the
# dashboard's JavaScript tests and the docker-compose file.
# Usage: scripts/test.sh        (installs redis-server and the dashboard's npm packages if missing)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

# A test run gains nothing from incremental compilation, which roughly doubles what the build
# writes to disk; the disk's free space is printed first because a full disk shows up later as
# an obscure linker crash (SIGBUS).
export CARGO_INCREMENTAL=0
say "free disk space: $(df -h "$root" | awk 'NR==2 {print $4}') at $root"

ensure_build_tools
ensure_redis
web_ok=1
ensure_web_deps "$root" || web_ok=0
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose 2>/dev/null || true
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

say "unused dependencies (cargo-machete)"
if ! command -v cargo-machete >/dev/null 2>&1; then
  cargo install --locked cargo-machete >/dev/null 2>&1 || true
fi
if command -v cargo-machete >/dev/null 2>&1; then
  cargo machete
else
  die "cargo-machete is missing and could not be installed (cargo install cargo-machete)"
fi

say "cargo test"
cargo test --workspace --exclude hostile-tests

say "release build (the hostile-input suite attacks what users run)"
cargo build --release --workspace --bins

say "hostile-input suite against the release binaries"
HOSTILE_BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/release" \
  cargo test -p hostile-tests -- --nocapture

say "chaos: a short pass (each tier and Redis killed once, single node and cluster)"
"${CARGO_TARGET_DIR:-$root/target}/release/chaos" --root "$root" --both --short

# The hour-long verdict (RSS within 5% after the warm-up) belongs to scripts/soak.sh; in under a
# minute the allocator is still settling, so the short passes allow 20% and check the rest as is.
say "soak: a short pass (500 churning and stalled subscribers for 45 s, single node and cluster)"
for topology in "" --cluster; do
  scripts/soak.sh 0.75 $topology --subscribers 500 --no-build --no-chart \
    --out "${CARGO_TARGET_DIR:-$root/target}/soak/short${topology:+-cluster}" \
    -- --sample-seconds 2 --warmup-minutes 0.25 --rss-growth-limit-percent 20
done

say "fuzz targets: a short pass (scripts/fuzz.sh SECONDS runs longer ones)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

if [ "$web_ok" = 1 ]; then
  say "dashboard tests (node --test)"
  (cd web && npm test --silent)
  say "dashboard in Chromium against the release binaries, with a cut topic-server connection"
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium \
    || die "the browser test needs Debian's chromium (apt-get install chromium)"
  BROWSER_TEST_BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/release" node scripts/browser-test.mjs
else
  die "the dashboard tests need npm (see above)"
fi

if command -v docker-compose >/dev/null 2>&1; then
  say "docker-compose config -q"
  docker-compose -f docker-compose.yml config -q
else
  warn "docker-compose is not installed and could not be installed: docker-compose.yml was not checked"
fi

say "all checks passed (build directory: $(du -sh "${CARGO_TARGET_DIR:-$root/target}" | cut -f1))"
