#!/usr/bin/env bash
# Shared helpers for scripts/*.sh: installing what is missing, finding free ports, waiting.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[33mwarning: %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror: %s\033[0m\n' "$*" >&2; exit 1; }

# Runs apt-get as root (directly or through sudo); fails if neither is possible.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 1
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || return 1
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Makes sure redis-server and redis-cli (the cluster tests make a Redis Cluster with it) are on
# PATH, installing Debian's packages when it can.
ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  say "redis-server or redis-cli is missing; installing them with apt-get"
  if apt_install redis-server redis-tools && command -v redis-server >/dev/null 2>&1 \
     && command -v redis-cli >/dev/null 2>&1; then
    return 0
  fi
  die "could not install redis-server. Install it yourself (Debian/Ubuntu: 'sudo apt-get install redis-server'; macOS: 'brew install redis') and run this again."
}

# Makes sure a C compiler and make are on PATH: ring compiles C, and jemalloc (topic-server's
# allocator) is built with its configure script and make. Installs Debian's build-essential
# when it can.
ensure_build_tools() {
  command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 && return 0
  say "a C compiler or make is missing; installing build-essential with apt-get"
  if apt_install build-essential && command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; then
    return 0
  fi
  die "the build needs a C compiler and make (Debian/Ubuntu: 'sudo apt-get install build-essential'; macOS: 'xcode-select --install')"
}

# Installs the dashboard's pinned npm packages into web/node_modules when they are missing.
ensure_web_deps() {
  local root="$1"
  [ -f "$root/web/package.json" ] || return 0
  if ! command -v npm >/dev/null 2>&1; then
    warn "npm is not installed: the dashboard's chart library cannot be installed (install Node.js 18+ and npm)."
    return 1
  fi
  if [ ! -d "$root/web/node_modules" ] || [ "$root/web/package-lock.json" -nt "$root/web/node_modules" ]; then
    say "installing the dashboard's npm packages (web/)"
    (cd "$root/web" && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; }) >&2 \
      || { warn "npm install failed in web/"; return 1; }
    touch "$root/web/node_modules"
  fi
}

# Prints a TCP port that is free on 127.0.0.1 now (without python3: a random unused one, so two
# calls before anything binds do not give the same port).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || { for p in $(shuf -i 20000-29999 -n 200); do (echo >/dev/tcp/127.0.0.1/"$p") 2>/dev/null || { echo "$p"; return; }; done; }
}

# Starts a command in the background with its output in DIR/NAME.log, and appends its pid to
# the caller's array `pids`.
start_logged() { # dir, name, command...
  local dir="$1" name="$2"; shift 2
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=("$!")
}

# Stops the processes whose ids are in the array named $1, the last started first (clients
# while their servers still answer; redis-server, started first, writes out its append-only
# file last): SIGTERM, then SIGKILL if one has not exited after $2 seconds (default 15).
stop_processes() {
  local -n stop_pids="$1"
  local seconds="${2:-15}" i pid killer
  for ((i = ${#stop_pids[@]} - 1; i >= 0; i--)); do
    pid="${stop_pids[i]}"
    kill -TERM "$pid" 2>/dev/null || continue
    (sleep "$seconds"; kill -KILL "$pid" 2>/dev/null) &
    killer=$!
    wait "$pid" 2>/dev/null || true
    kill "$killer" 2>/dev/null || true
    wait "$killer" 2>/dev/null || true
  done
}

# Waits up to 10 s for the redis-server on 127.0.0.1:$1 to answer PING.
wait_redis() {
  local _
  for _ in $(seq 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# True when something listens on 127.0.0.1:PORT.
port_busy() { (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

# A fresh random token (48 hex digits), e.g. the bridge's publish token for one run.
random_token() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# Waits up to $2 seconds for an HTTP URL to answer 2xx.
wait_http() {
  local url="$1" seconds="${2:-30}" i
  for ((i = 0; i < seconds * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
