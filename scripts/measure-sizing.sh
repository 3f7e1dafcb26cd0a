#!/usr/bin/env bash
# Measures the figures of docs/operations.md "Sizing": the memory of an idle worker, and the wall
# time and memory of geopreview imports run one at a time and side by side (a worker's memory,
# each import child's, all of it together), through the path CKAN uses: the API's add-layer call,
# a worker downloading the file from a local CKAN stand-in, importing it into PostGIS, reporting.
#
#   scripts/measure-sizing.sh [POLYGONS] [CONCURRENT]   # defaults: 150000 polygons, 4 at once
#
# It uses the local Redis (database 13, flushed) and a PostgreSQL database of its own
# (hdx_jobs_sizing, recreated). Memory is the resident set size read from /proc every 0.1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
polygons=${1:-150000}
concurrent=${2:-4}
redis_db=13 db=hdx_jobs_sizing

scripts/setup.sh >/dev/null
read -r api_port files_port < <(scripts/free-port.sh 2)
cargo build --release -q -p hdx-jobs-cli
bin=$PWD/target/release/hdx-jobs
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
wait_for() {   # wait_for WHAT COMMAND...: up to 60 s
  local what=$1; shift
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "timed out waiting for $what"; return 1
}

redis-cli -n "$redis_db" flushdb >/dev/null
dropdb -h /var/run/postgresql --if-exists "$db"
createdb -h /var/run/postgresql "$db"
psql -h /var/run/postgresql -d "$db" -qc "create extension postgis"

mkdir -p "$work/files" "$work/tmp"
python3 - "$polygons" "$work/files/polygons.geojson" <<'EOF'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
side = int(n ** 0.5) + 1
with open(path, "w") as out:
    out.write('{"type":"FeatureCollection","features":[\n')
    for i in range(n):
        x, y = -170 + (i % side) * 340 / side, -80 + (i // side) * 160 / side
        d = 100 / side
        ring = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]
        feature = {"type": "Feature", "properties": {"id": i, "name": f"area {i}", "pop": i * 7 % 1000},
                   "geometry": {"type": "Polygon", "coordinates": [ring]}}
        out.write(("," if i else "") + json.dumps(feature) + "\n")
    out.write("]}\n")
EOF
size=$(du -m "$work/files/polygons.geojson" | cut -f1)

python3 testkit/python/standin.py "$files_port" "$work/files" "$work/ckan.jsonl" </dev/null &
pids+=($!)
export HDX_REDIS_URL="redis://127.0.0.1:6379/$redis_db"
export HDX_GISDB_URL="host=/var/run/postgresql dbname=$db"
export CKAN_API_BASE_URL="http://127.0.0.1:$files_port/api/action" HDX_DOMAIN="127.0.0.1:$files_port"
export HDX_CKAN_ALLOW_HTTP=true HDX_GIS_API_KEY=sizing HDX_OUTBOUND_ALLOW=127.0.0.1/32
export HDX_GIS_TMP="$work/tmp" LOG_LEVEL=WARNING
"$bin" serve --bind "127.0.0.1:$api_port" &
pids+=($!)
"$bin" worker --name "sizing-$$" --concurrency "$concurrent" --without-scheduler geo_q &
worker=$!
pids+=("$worker")
wait_for "the API" curl -fs "http://127.0.0.1:$api_port/readyz"
wait_for "the CKAN stand-in" curl -fs -o /dev/null "http://127.0.0.1:$files_port/polygons.geojson"
sleep 3   # the worker settles: registered, first maintenance round done
idle=$(rss_kb "$worker")

round() {   # round N: N add-layer calls at once; prints a table row
  local n=$1 start i done_count=0 worker_peak=0 child_peak=0 total_peak=0
  : >"$work/ckan.jsonl"
  start=$(date +%s.%N)
  for i in $(seq "$n"); do
    curl -fs -o /dev/null "http://127.0.0.1:$api_port/api/add-layer/dataset/sizing/resource/r$n-$i?resource_download_url=http://127.0.0.1:$files_port/polygons.geojson"
  done
  while [ "$done_count" -lt "$n" ]; do
    local w total child c
    w=$(rss_kb "$worker"); total=$w
    for child in $(pgrep -P "$worker" || true); do
      c=$(rss_kb "$child"); total=$((total + c))
      [ "$c" -gt "$child_peak" ] && child_peak=$c
    done
    [ "$w" -gt "$worker_peak" ] && worker_peak=$w
    [ "$total" -gt "$total_peak" ] && total_peak=$total
    # A finished import reports its bounding box (BOX(...)), a failed one the state failure.
    done_count=$(grep -c 'BOX(\|failure' "$work/ckan.jsonl" 2>/dev/null || true)
    sleep 0.1
  done
  grep -q 'failure' "$work/ckan.jsonl" && { say "an import failed: $(cat "$work/ckan.jsonl")"; exit 1; }
  printf '| %s | %.1f s | %s MB | %s MB | %s MB |\n' "$n" "$(awk "BEGIN {print $(date +%s.%N) - $start}")" \
    $((worker_peak / 1024)) $((child_peak / 1024)) $((total_peak / 1024))
}

echo "$polygons polygons, a ${size} MB GeoJSON; idle worker: $((idle / 1024)) MB RSS"
echo
echo "| imports at once | wall time (last report) | worker peak RSS | largest import child peak RSS | all together, peak |"
echo "|---|---|---|---|---|"
round 1
round "$concurrent"
