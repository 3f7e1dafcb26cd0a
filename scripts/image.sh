#!/usr/bin/env bash
# Builds the hdx-jobs container image from a binary built on this (Debian 12) host and
# smoke-tests it with podman: the API container answers /readyz; a worker container imports a
# sample file for an add-layer call (enqueued through the API) and reports to a local CKAN
# stand-in, and the layer's tile is served; a stopped worker exits 0; the compose stack comes up,
# every service runs and the API answers through its published port.
#
#   scripts/image.sh          install what is missing, build, smoke-test, clean up
#   scripts/image.sh build    only build localhost/hdx-jobs:test
#
# HDX_JOBS_BINARY: the binary to put in the image (default target/release/hdx-jobs; build it
# with `cargo build --release --locked -p hdx-jobs-cli`, which builds hdx-jobs-import beside it);
# HDX_JOBS_IMPORT_BINARY: geopreview's import child (default: hdx-jobs-import beside
# HDX_JOBS_BINARY). KEEP=1 leaves the containers running.
#
# No container registry is reachable here: the Debian base is made with mmdebstrap and imported
# under the name the Dockerfile pulls elsewhere (debian:bookworm-slim), and the `from-host`
# target copies the host-built binary into the same runtime stage that the `from-source` target
# (CI elsewhere) builds. See docs/operations.md, "The image".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
say() { echo "[image] $*" >&2; }

binary=${HDX_JOBS_BINARY:-target/release/hdx-jobs}
import_binary=${HDX_JOBS_IMPORT_BINARY:-$(dirname "$binary")/hdx-jobs-import}
tag=localhost/hdx-jobs:test
base=localhost/debian:bookworm-slim
# Host-network ports, free and above the ephemeral range (scripts/free-port.sh says why).
read -r api_port compose_port redis_port pg_port standin_port < <(scripts/free-port.sh 5)
suffix=$$
project=hdx-smoke-$suffix
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

# Every podman call runs with runc (crun cannot use this kind of host's cgroups) and explicit
# rlimits (podman's default nofile is above the hard limit here: "error setting rlimit type 7").
workdir=$(mktemp -d)
conf="$workdir/containers.conf"
cat > "$conf" <<'EOF'
[containers]
default_ulimits = ["nofile=8192:8192", "nproc=8192:8192"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$conf   # an absolute path: buildah reads it again from elsewhere

label=hdx-smoke=$suffix   # on every container started with `podman run`
standin_pid=""
compose_up=""
cleanup() {
  set +e
  # Neither a second signal nor a reader of our output that is gone (killed with us) stops it.
  trap '' INT TERM PIPE
  if [ "${KEEP:-0}" != 1 ]; then
    remove_started
    if [ -n "$compose_up" ]; then
      timeout 300 "$compose" -p "$project" -f "$root/compose.yaml" down -v -t 30 >/dev/null 2>&1
      # Whatever `down` missed (a half-made stack): by the project's label, then its network.
      local left
      left=$(podman ps -aq --filter "label=com.docker.compose.project=$project")
      [ -n "$left" ] && podman rm -f -v -t 5 $left >/dev/null 2>&1
      left=$(podman volume ls -q --filter "label=com.docker.compose.project=$project")
      [ -n "$left" ] && podman volume rm -f $left >/dev/null 2>&1
      podman network exists "${project}_default" && podman network rm -f "${project}_default" >/dev/null 2>&1
    fi
  fi
  if [ -n "$standin_pid" ]; then
    kill "$standin_pid" 2>/dev/null
    wait "$standin_pid" 2>/dev/null
  fi
  rm -rf "$workdir"
  return 0
}
remove_started() {
  local ids
  ids=$(podman ps -aq --filter "label=$label")
  [ -z "$ids" ] || podman rm -f -v -t 5 $ids >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Tools: podman, runc, mmdebstrap, uidmap (scripts/setup.sh installs them), and the DNS of
# podman's networks, by which compose's services find each other by name: CNI's dnsname plugin
# (Debian 12's podman 4 uses CNI) or netavark's aardvark-dns. podman-compose comes from PyPI, in
# the test venv of scripts/python-venv.sh.
install() {
  say "installing $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v newuidmap >/dev/null || missing+=(uidmap)
[ ${#missing[@]} -eq 0 ] || install "${missing[@]}"
case $(podman info --format '{{.Host.NetworkBackend}}') in
  cni) [ -x /usr/lib/cni/dnsname ] || [ -x /opt/cni/bin/dnsname ] \
         || install golang-github-containernetworking-plugin-dnsname ;;
  netavark) [ -x /usr/lib/podman/aardvark-dns ] || [ -x /usr/libexec/podman/aardvark-dns ] \
         || install aardvark-dns ;;
esac
compose=${PODMAN_COMPOSE:-$(command -v podman-compose || echo "$root/target/test-venv/bin/podman-compose")}
[ -x "$compose" ] || { say "podman-compose is missing: scripts/python-venv.sh installs it"; exit 1; }

# Runs a quiet command; its output is shown only when it fails.
quiet() {
  local log="$workdir/quiet.log"
  "$@" >"$log" 2>&1 && return 0
  local rc=$?
  say "failed ($rc): $*"; tail -n 40 "$log" >&2
  return "$rc"
}
build() { quiet podman build --network host --format docker "$@"; }   # docker format keeps HEALTHCHECK
run() { podman run --no-healthcheck "$@"; }   # no systemd here for podman's health timers

# The Debian base, made once.
if ! podman image exists "$base"; then
  say "building $base with mmdebstrap (about a minute)"
  quiet mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' --aptopt='APT::Install-Suggests "false"' \
    --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$workdir/rootfs.tar"
  quiet podman import --quiet --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$workdir/rootfs.tar" "$base"
  rm -f "$workdir/rootfs.tar"
fi

# The images: hdx-jobs from the host binary; Redis and PostGIS for the stack, from Debian.
for file in "$binary" "$import_binary"; do
  [ -x "$file" ] || { say "$file is missing: cargo build --release --locked -p hdx-jobs-cli"; exit 1; }
done
# The build context holds only this copy of target/ (.dockerignore).
mkdir -p target/image
cp "$binary" target/image/hdx-jobs
cp "$import_binary" target/image/hdx-jobs-import
say "building $tag from $binary and $import_binary (target from-host)"
previous=$(podman image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
build --target from-host --build-arg BINARY=target/image/hdx-jobs \
  --build-arg IMPORT_BINARY=target/image/hdx-jobs-import -t "$tag" .
current=$(podman image inspect -f '{{.Id}}' "$tag")
# The previous :test, now untagged (the cached layers of the runtime stage stay).
[ -z "$previous" ] || [ "$previous" = "$current" ] || podman rmi "$previous" >/dev/null 2>&1 || true
[ -n "$(podman image inspect -f '{{.Config.Healthcheck}}' "$tag")" ] \
  || { say "$tag has no HEALTHCHECK (built in OCI format?)"; exit 1; }
# Both executables run in the image (hdx-jobs-import with the GDAL runtime it links).
for program in hdx-jobs hdx-jobs-import; do
  version=$(podman run --rm --no-healthcheck --entrypoint "$program" "$tag" --version) \
    || { say "$program does not run in $tag"; exit 1; }
  say "image: $version"
done
for image in postgis:15 redis:7; do
  podman image exists "localhost/hdx-$image" && continue
  say "building localhost/hdx-$image from docker/${image%%:*}.Dockerfile"
  build -f "docker/${image%%:*}.Dockerfile" -t "localhost/hdx-$image" docker
done
[ "${1:-}" = build ] && exit 0

# Smoke test, on the host network.
# Throwaway data: tmpfs on the images' VOLUME paths, so no anonymous volume is left behind.
start() { local name=$1; shift; run -d --network host --label "$label" --name "$name" "$@" >/dev/null; }
wait_for() {
  local what=$1; shift
  for _ in $(seq 120); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  say "$what did not happen"; return 1
}
logs() { local name; for name in "$@"; do say "--- podman logs $name"; podman logs --tail 40 "$name" >&2 2>&1 || true; done; }
start "hdx-smoke-redis-$suffix" --tmpfs /data:rw,mode=0750,U localhost/hdx-redis:7 --bind 127.0.0.1 --port "$redis_port" --save ''
start "hdx-smoke-pg-$suffix" --tmpfs /var/lib/postgresql/data:rw,mode=0700,U -e PGPORT="$pg_port" -e POSTGRES_USER=gis -e POSTGRES_PASSWORD=gis \
  localhost/hdx-postgis:15
wait_for "Redis to answer" podman exec "hdx-smoke-redis-$suffix" redis-cli -p "$redis_port" ping \
  || { logs "hdx-smoke-redis-$suffix"; exit 1; }
wait_for "PostGIS to answer" podman exec "hdx-smoke-pg-$suffix" pg_isready -q -h 127.0.0.1 -p "$pg_port" -d gis \
  || { logs "hdx-smoke-pg-$suffix"; exit 1; }

# CKAN's stand-in on the host: serves the sample file and records what CKAN receives.
mkdir -p "$workdir/files"
cp samples/geo/districts.geojson "$workdir/files/"
python3 testkit/python/standin.py "$standin_port" "$workdir/files" "$workdir/ckan.jsonl" </dev/null &
standin_pid=$!
wait_for "the CKAN stand-in to answer" curl -fs -o /dev/null "http://127.0.0.1:$standin_port/districts.geojson"
# Configured as an operator would: CKAN (its host HDX_DOMAIN, over plain http for this local
# stand-in) and the file host are on private addresses. The file host `files.smoke` (the
# stand-in, 127.0.0.1) is not CKAN's host, so the outbound guard lets the worker download from it
# only because HDX_OUTBOUND_ALLOW lists it. The API needs its token for /api/*.
env=(-e HDX_REDIS_URL="redis://127.0.0.1:$redis_port/1" -e REDIS_STREAM_URL="redis://127.0.0.1:$redis_port/7"
     -e HDX_GISDB_URL="postgresql://gis:gis@127.0.0.1:$pg_port/gis"
     -e CKAN_API_BASE_URL="http://127.0.0.1:$standin_port/api/action"
     -e HDX_DOMAIN="127.0.0.1:$standin_port" -e HDX_CKAN_ALLOW_HTTP=true -e HDX_GIS_API_KEY=smoke-key
     -e HDX_OUTBOUND_ALLOW=files.smoke
     -e HDX_JOBS_API_TOKEN=smoke-token -e LOG_LEVEL=INFO --tmpfs /var/lib/hdx-jobs/tmp:rw,mode=0750,U)
# The image's own bind (HDX_JOBS_BIND=0.0.0.0:5000) would put the API on every address of this
# host (the host network): bind loopback at a free port, as a host-network deployment would.
start "hdx-smoke-api-$suffix" "${env[@]}" -e HDX_JOBS_BIND="127.0.0.1:$api_port" "$tag"
start "hdx-smoke-worker-$suffix" "${env[@]}" --add-host files.smoke:127.0.0.1 "$tag" \
  worker --worker-ttl 600 geo_q
api="http://127.0.0.1:$api_port"
wait_for "the API to answer /readyz" curl -fs "$api/readyz" || { logs "hdx-smoke-api-$suffix"; exit 1; }
say "API container: /readyz $(curl -fs "$api/readyz")"

# CKAN's add-layer call, through the API container; the worker container imports and reports.
resource=smoke-$suffix
noauth=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/add-layer/dataset/smoke/resource/$resource")
[ "$noauth" = 401 ] || { say "add-layer without the token answered $noauth, not 401"; exit 1; }
answer=$(curl -fsS -H 'Authorization: Bearer smoke-token' \
  "$api/api/add-layer/dataset/smoke/resource/$resource?resource_download_url=http://files.smoke:$standin_port/districts.geojson") \
  || { logs "hdx-smoke-api-$suffix"; exit 1; }
grep -q '"state":"processing"' <<<"$answer" || { say "add-layer answered $answer"; exit 1; }
reported() { grep -q "$resource" "$workdir/ckan.jsonl" 2>/dev/null; }
wait_for "the worker's report to CKAN" reported || { logs "hdx-smoke-worker-$suffix"; exit 1; }
report=$(grep "$resource" "$workdir/ckan.jsonl")
grep -q 'BOX(21.5 -4.25,24.75 -1.5)' <<<"$report" || { say "CKAN got: $report"; logs "hdx-smoke-worker-$suffix"; exit 1; }
grep -q '"authorization": "smoke-key"' <<<"$report" || { say "no API key in: $report"; exit 1; }
layer="pre_${resource//-/_}"
status=$(curl -s -o /dev/null -w '%{http_code}' "$api/tiles/$layer/0/0/0.pbf")
[ "$status" = 200 ] || { say "the tile of $layer answered $status"; logs "hdx-smoke-api-$suffix"; exit 1; }
say "worker container: imported and reported to CKAN; tile served"

# A stop puts nothing in limbo: the worker exits 0 (tini forwards SIGTERM).
podman stop -t 30 "hdx-smoke-worker-$suffix" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "hdx-smoke-worker-$suffix")
[ "$code" = 0 ] || { say "the worker did not stop cleanly: exit code $code"; logs "hdx-smoke-worker-$suffix"; exit 1; }
say "worker container: podman stop exits 0"
remove_started
kill "$standin_pid" 2>/dev/null; wait "$standin_pid" 2>/dev/null || true; standin_pid=""

# The compose stack (its own bridge network, service names through the network's DNS): the
# configuration, then up; every service runs (and stays up), the healthchecks pass when run
# (podman-compose ignores `service_healthy` and there is no systemd for their timers), and the
# API answers through its published port.
export HDX_JOBS_API_TOKEN=smoke-token HDX_JOBS_PORT=$compose_port
quiet "$compose" -p "$project" -f "$root/compose.yaml" config
services=$("$compose" -p "$project" -f "$root/compose.yaml" config --services 2>/dev/null)
[ -n "$services" ] || { say "compose.yaml lists no services"; exit 1; }
compose_up=1
quiet "$compose" -p "$project" -f "$root/compose.yaml" up -d
container_of() {   # the container of a service, by the labels podman-compose sets
  podman ps -a --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}'
}
all_containers() { local s; for s in $services; do container_of "$s"; done; }
wait_for "the compose stack's API to answer" curl -fs "http://127.0.0.1:$compose_port/readyz" \
  || { logs $(all_containers); exit 1; }
for service in $services; do
  name=$(container_of "$service")
  [ -n "$name" ] || { say "compose service $service has no container"; exit 1; }
  check=$(podman inspect -f '{{if .Config.Healthcheck}}{{range .Config.Healthcheck.Test}}{{.}} {{end}}{{end}}' "$name")
  if [ -n "$check" ] && [ "${check%% *}" != NONE ]; then
    wait_for "the healthcheck of compose service $service to pass" podman healthcheck run "$name" \
      || { logs "$name"; exit 1; }
  fi
done
for service in $services; do
  name=$(container_of "$service")
  state=$(podman inspect -f '{{.State.Status}} {{.RestartCount}}' "$name" 2>/dev/null || true)
  [ "$state" = "running 0" ] || { say "compose service $service: ${state:-missing} (state, restarts)"; logs "$name"; exit 1; }
done
noauth=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$compose_port/api/run-checks")
[ "$noauth" = 401 ] || { say "the compose stack's /api/run-checks without the token answered $noauth, not 401"; exit 1; }
say "compose: every service runs ($(echo $services | tr ' ' ,)), the API answers through its published port"
say "smoke test passed"
