#!/usr/bin/env bash
# Installs and starts what hdx-jobs needs on a Debian/Ubuntu machine; safe to run again.
#   - Redis (installed with apt if missing, started on 127.0.0.1:6379 if not answering)
#   - Python 3 with venv, for the Python rq peer of the tests and benchmarks
# Rust (cargo) must already be there: https://rustup.rs
set -euo pipefail

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

command -v cargo >/dev/null || { log "cargo not found: install Rust from https://rustup.rs"; exit 1; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v pkg-config >/dev/null || missing+=(pkg-config)

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile "${TMPDIR:-/tmp}/hdx-jobs-redis.log"
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis does not answer on 127.0.0.1:6379"; exit 1; }
log "Redis $(redis-cli -h 127.0.0.1 -p 6379 info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p') is up"
