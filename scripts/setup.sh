#!/usr/bin/env bash
# Installs and starts what hdx-jobs and its tests need on a Debian/Ubuntu machine; safe to run
# again (it installs only what is missing):
#   - Redis (started on 127.0.0.1:6379 if not answering)
#   - PostgreSQL with PostGIS (started if not running; a superuser role for the current OS user,
#     reached through the local socket)
#   - GDAL (library and tools), Chromium and ChromeDriver (browser tests), wrk (benchmarks),
#     faketime (the skewed-clock test), podman, runc, mmdebstrap (the container image)
#   - npm, and MapLibre GL JS from the npm registry (scripts/fetch-assets.sh)
#   - promtool (Debian's prometheus package), which checks and tests the alerting rules in
#     deploy/prometheus; the Prometheus server that comes with it is left stopped and disabled
#   - Python 3 with venv, for the Python rq peer of the tests and benchmarks
# Rust (cargo) must already be there: https://rustup.rs
set -euo pipefail

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

command -v cargo >/dev/null || { log "cargo not found: install Rust from https://rustup.rs"; exit 1; }

updated=false
install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  if ! $updated; then
    $sudo apt-get update -qq
    updated=true
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v redis-server >/dev/null || install redis-server
command -v redis-cli >/dev/null || install redis-tools
command -v python3 >/dev/null || install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || install python3-venv
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || install postgresql
pg_version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
install "postgresql-$pg_version-postgis-3" pkg-config libgdal-dev gdal-bin zip unzip \
  chromium chromium-driver wrk curl faketime podman runc mmdebstrap uidmap \
  golang-github-containernetworking-plugin-dnsname

command -v npm >/dev/null || install npm

# promtool. Debian ships it only inside the prometheus package, whose postinst enables the
# server and starts it wherever services may start (a machine with systemd, or sysvinit without
# a policy-rc.d that forbids it); a monitoring server is not wanted here, so right after a fresh
# install it is stopped and disabled. Containers without an init system just get the files.
if ! command -v promtool >/dev/null; then
  install prometheus
  if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    $sudo invoke-rc.d prometheus stop >/dev/null 2>&1 || true
    $sudo update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi
command -v promtool >/dev/null || { log "promtool missing after installing prometheus"; exit 1; }
"$(dirname "$0")/fetch-assets.sh"

# Redis.
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

# PostgreSQL.
if ! pg_isready -q -h /var/run/postgresql 2>/dev/null; then
  log "starting PostgreSQL $pg_version"
  $sudo pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start 2>/dev/null \
    || $sudo pg_ctlcluster "$pg_version" main start
  for _ in $(seq 100); do
    pg_isready -q -h /var/run/postgresql && break
    sleep 0.1
  done
fi
user=$(id -un)
if ! psql -h /var/run/postgresql -U "$user" -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  log "creating the PostgreSQL superuser role $user"
  (cd / && $sudo -u postgres createuser -s "$user" 2>/dev/null) || (cd / && su postgres -c "createuser -s $user")
fi
log "Redis $(redis-cli -h 127.0.0.1 -p 6379 info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p')," \
  "PostgreSQL $pg_version with PostGIS, GDAL $(gdal-config --version) are ready"
