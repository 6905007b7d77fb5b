#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] — run every cargo-fuzz target in fuzz/ for SECONDS each (default 60),
# one target at a time, one job each; print a table of target / executions / exec/s / result.
# Exits non-zero when any target found a crash (the artifact path and how to replay it are
# printed). Without a nightly toolchain or cargo-fuzz it says so and exits 0.
#
# The targets fuzz diffusion-core's public API (see fuzz/fuzz_targets/*.rs). Seeds are read
# from fuzz/corpus/TARGET and the minimised inputs of bugs found so far from
# fuzz/regressions/TARGET (both kept in git, never written); what libFuzzer learns goes to
# fuzz/target/corpus/TARGET, so later runs start from it and git stays clean.
# Logs: fuzz/target/fuzz-logs/TARGET.log. Crash inputs: fuzz/artifacts/TARGET/.
#
# Sanitizer: AddressSanitizer, cargo-fuzz's default; it builds and runs on this project's
# Linux x86_64 machines. Should its build fail, the script falls back to `--sanitizer none`
# and says so. FUZZ_SANITIZER=address|none|... forces one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"

usage() {
  sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

PER_TARGET="${1:-60}"
case "$PER_TARGET" in
  -h | --help) usage ;;
esac
[[ "$PER_TARGET" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number of seconds, not '$PER_TARGET'"
[ $# -le 1 ] || usage

FUZZ_DIR="fuzz"
LOG_DIR="$FUZZ_DIR/target/fuzz-logs"
WORK_CORPUS="$FUZZ_DIR/target/corpus"

# --- tools -------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  warn "cargo is not installed: skipping the fuzz targets (install Rust with rustup, then 'rustup toolchain install nightly' and 'cargo install cargo-fuzz')."
  exit 0
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  warn "no nightly toolchain ('cargo +nightly' fails): cargo-fuzz needs one. Skipping the fuzz targets; install it with 'rustup toolchain install nightly'."
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "cargo-fuzz is missing; installing it with 'cargo install cargo-fuzz'"
  if ! cargo install --locked cargo-fuzz >&2 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    warn "could not install cargo-fuzz: skipping the fuzz targets (install it with 'cargo install cargo-fuzz')."
    exit 0
  fi
fi
say "$(cargo +nightly --version), $(cargo +nightly fuzz --version)"

mapfile -t TARGETS < <(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")
[ "${#TARGETS[@]}" -gt 0 ] || die "no fuzz targets found in $FUZZ_DIR/"

# --- build -------------------------------------------------------------------------------------
mkdir -p "$LOG_DIR"
SANITIZER="${FUZZ_SANITIZER:-address}"
say "building ${#TARGETS[@]} fuzz targets (sanitizer: $SANITIZER)"
if ! cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" >"$LOG_DIR/build.log" 2>&1; then
  if [ -z "${FUZZ_SANITIZER:-}" ] && [ "$SANITIZER" = address ]; then
    warn "the AddressSanitizer build failed (see $LOG_DIR/build.log); retrying with --sanitizer none"
    SANITIZER=none
    cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" >"$LOG_DIR/build.log" 2>&1 \
      || { tail -n 30 "$LOG_DIR/build.log" >&2; die "the fuzz targets do not build (see $LOG_DIR/build.log)"; }
  else
    tail -n 30 "$LOG_DIR/build.log" >&2
    die "the fuzz targets do not build (see $LOG_DIR/build.log)"
  fi
fi

# --- run ---------------------------------------------------------------------------------------
# The value of libFuzzer's final `stat::NAME:` line in a log, or "-".
final_stat() {
  local value
  value="$(sed -n "s/^stat::$2: *\([0-9][0-9]*\).*/\1/p" "$1" | tail -n 1)"
  echo "${value:--}"
}

declare -a ROWS=() FAILED=()
for target in "${TARGETS[@]}"; do
  seeds="$FUZZ_DIR/corpus/$target"
  work="$WORK_CORPUS/$target"
  log="$LOG_DIR/$target.log"
  mkdir -p "$work" "$seeds"
  corpora=("$work" "$seeds")
  [ -d "$FUZZ_DIR/regressions/$target" ] && corpora+=("$FUZZ_DIR/regressions/$target")
  say "fuzzing $target for ${PER_TARGET}s (log: $log)"
  status=0
  # The first corpus directory is the one libFuzzer writes to: the scratch one.
  cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" "$target" "${corpora[@]}" -- \
    -max_total_time="$PER_TARGET" -print_final_stats=1 -timeout=60 -rss_limit_mb=2048 \
    >"$log" 2>&1 || status=$?
  execs="$(final_stat "$log" number_of_executed_units)"
  rate="$(final_stat "$log" average_exec_per_sec)"
  artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
  if [ "$status" -eq 0 ] && [ -z "$artifact" ]; then
    result="ok"
  else
    case "$(basename "${artifact:-none}")" in
      crash-*) result="CRASH" ;;
      timeout-*) result="TIMEOUT" ;;
      oom-*) result="OOM" ;;
      leak-*) result="LEAK" ;;
      *) result="FAILED (exit $status)" ;;
    esac
    FAILED+=("$target|$result|${artifact:-no artifact: see $log}")
    grep -m 1 -A 3 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log" >&2 || tail -n 20 "$log" >&2
  fi
  ROWS+=("$target|$execs|$rate|$result")
done

# --- report ------------------------------------------------------------------------------------
echo
printf '%-16s %14s %8s  %s\n' "target" "executions" "exec/s" "result"
printf '%-16s %14s %8s  %s\n' "------" "----------" "------" "------"
for row in "${ROWS[@]}"; do
  IFS='|' read -r target execs rate result <<<"$row"
  printf '%-16s %14s %8s  %s\n' "$target" "$execs" "$rate" "$result"
done
echo "(${PER_TARGET}s per target, sanitizer: $SANITIZER)"

if [ "${#FAILED[@]}" -gt 0 ]; then
  echo
  for entry in "${FAILED[@]}"; do
    IFS='|' read -r target result artifact <<<"$entry"
    echo "$target: $result — $artifact"
    if [ -f "$artifact" ]; then
      echo "  replay:   cargo +nightly fuzz run --fuzz-dir $FUZZ_DIR $target $artifact"
      echo "  minimise: cargo +nightly fuzz tmin --fuzz-dir $FUZZ_DIR $target $artifact"
    fi
  done
  die "${#FAILED[@]} fuzz target(s) failed"
fi
say "no crashes"
