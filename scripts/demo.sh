#!/usr/bin/env bash
# Starts hdx-jobs locally and shows it working: the HTTP API (with the monitor), a worker on
# HDX's queues and a scheduler, on the local Redis and PostGIS; then feeds it sample work
# through the API and the CLI (a result, a failure, a timeout, a retried job, a delayed job, a
# periodic job, an analytics event), imports the bundled sample GeoJSON (samples/geo) into
# PostGIS and serves it as vector tiles, sends the bundled CKAN dataset pair (samples/ckan)
# through the change-event job to the event stream, shows the outcomes and `hdx-jobs info`,
# and keeps running until Ctrl-C.
#
#   scripts/demo.sh           # installs/starts Redis and PostgreSQL if missing, builds, runs
#   scripts/demo.sh --check   # the same, but stops once the samples are done (used by a test)
#
# Settings: HDX_REDIS_URL (default redis://127.0.0.1:6379/1, HDX's queue database),
# REDIS_STREAM_URL (default: the same database), APP_PORT (default 5000), HDX_GISDB_URL
# (default: a local database hdx_jobs_demo with PostGIS), HDX_JOBS_BIN (an already built
# binary).
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[ "${1:-}" = "--check" ] && check=true

scripts/setup.sh
if [ -z "${HDX_JOBS_BIN:-}" ]; then
  cargo build --release -p hdx-jobs-cli
  HDX_JOBS_BIN=target/release/hdx-jobs
fi
export HDX_REDIS_URL="${HDX_REDIS_URL:-redis://127.0.0.1:6379/1}"
export APP_PORT="${APP_PORT:-5000}"
if [ -z "${HDX_GISDB_URL:-}" ]; then
  psql -h /var/run/postgresql -d postgres -Atc "select 1 from pg_database where datname = 'hdx_jobs_demo'" | grep -q 1 \
    || createdb -h /var/run/postgresql hdx_jobs_demo
  psql -h /var/run/postgresql -d hdx_jobs_demo -qc "create extension if not exists postgis"
  export HDX_GISDB_URL="host=/var/run/postgresql dbname=hdx_jobs_demo"
fi
export REDIS_STREAM_URL="${REDIS_STREAM_URL:-$HDX_REDIS_URL}"
export EVENTS_API_ENABLED="${EVENTS_API_ENABLED:-true}"
bin="$HDX_JOBS_BIN"
api="http://127.0.0.1:$APP_PORT"
queues="geo_q analytics_q event_q fs_check_q default_scheduler_q demo"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "${events_out:-}"
}
trap stop_all EXIT

say "starting the API on $api, a worker on $queues, and a scheduler ($HDX_REDIS_URL)"
"$bin" serve --bind "127.0.0.1:$APP_PORT" & pids+=($!)
# shellcheck disable=SC2086
"$bin" work --name "demo-worker-$$" --concurrency 4 $queues & pids+=($!)
"$bin" scheduler & pids+=($!)
events_out=$(mktemp)
"$bin" events listen --consumer "demo-$$" >"$events_out" & pids+=($!)
for _ in $(seq 100); do curl -fs "$api/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$api/readyz" >/dev/null || { echo "the API did not start" >&2; exit 1; }

say "through the HTTP API, as CKAN calls it"
echo "GET /version: $(curl -fs "$api/version")"
echo "POST /api/send-analytics: $(curl -fs -H 'Content-Type: application/json' \
  -d '{"event_name": "demo event", "send_mixpanel": false, "send_ga": true, "ga_meta": {"cid": "demo-client"}}' \
  "$api/api/send-analytics")"
echo "POST /api/scheduler/add_job: $(curl -fs -H 'Content-Type: application/json' \
  -d '{"action": "status_show", "method": "get", "sch_minutes": 60}' "$api/api/scheduler/add_job")"

say "through the CLI"
echo_id=$("$bin" enqueue -q demo --func hdx_jobs.echo --args '[{"resource_id": "sample-1"}]' --kwargs '{"lang": "fr"}')
fail_id=$("$bin" enqueue -q demo --func hdx_jobs.fail --args '["a sample failure"]')
timeout_id=$("$bin" enqueue -q demo --func hdx_jobs.sleep --args '[30]' --timeout 1)
retry_id=$("$bin" enqueue -q demo --func hdx_jobs.fail --kwargs '{"message": "flaky service", "retryable": true}' --retry 2 --retry-interval 1)
delayed_id=$("$bin" enqueue -q demo --func hdx_jobs.echo --args '["I waited 2 s"]' --in 2)
"$bin" schedule add demo-heartbeat --queue demo --func hdx_jobs.echo --args '["tick"]' --every 10
ids="$echo_id $fail_id $timeout_id $retry_id $delayed_id"

say "waiting for them to run"
for _ in $(seq 300); do
  pending=0
  for id in $ids; do
    status=$("$bin" job show "$id" --json | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
    case "$status" in finished|failed) ;; *) pending=$((pending + 1)) ;; esac
  done
  analytics=$(curl -fs "$api/monitor/api/queues/analytics_q/jobs?registry=finished" | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
  [ "$pending" = 0 ] && [ "${analytics:-0}" -ge 1 ] && break
  sleep 0.1
done
[ "$pending" = 0 ] || { echo "demo jobs did not finish" >&2; exit 1; }

say "geopreview: samples/geo/districts.geojson into PostGIS, served as vector tiles"
"$bin" geopreview import samples/geo/districts.geojson --resource-id demo-districts
echo "GET /tiles/pre_demo_districts.json: $(curl -fs "$api/tiles/pre_demo_districts.json")"
echo "map: $api/preview/pre_demo_districts"

say "change events: the dataset pair of samples/ckan through POST /api/create-change-events"
body=$(printf '{"username": "demo", "old_dataset_dict": %s, "new_dataset_dict": %s}' \
  "$(cat samples/ckan/dataset_old.json)" "$(cat samples/ckan/dataset_new.json)")
echo "POST /api/create-change-events: $(curl -fs -H 'Content-Type: application/json' -d "$body" "$api/api/create-change-events")"
expected=$("$bin" events diff --old samples/ckan/dataset_old.json --new samples/ckan/dataset_new.json --user demo | grep -c event_type)
for _ in $(seq 300); do
  [ "$(grep -c event_type "$events_out")" -ge "$expected" ] && break
  sleep 0.1
done
[ "$(grep -c event_type "$events_out")" -ge "$expected" ] || { echo "the change events did not arrive" >&2; exit 1; }
echo "hdx-jobs events listen received $expected events from the stream:"
sed -n 's/.*"event_type":"\([a-z-]*\)".*/  \1/p' "$events_out"

for id in $echo_id $timeout_id $retry_id $delayed_id; do
  say "hdx-jobs job show $id"
  "$bin" job show "$id"
done
say "hdx-jobs info"
"$bin" info
say "hdx-jobs schedule list"
"$bin" schedule list
say "metrics (excerpt of $api/metrics)"
curl -fs "$api/metrics" | grep -E '^hdx_jobs_jobs_(finished|failed)_total' | head -8

say "monitor: $api/monitor   API description: $api/openapi.json"
if $check; then
  "$bin" schedule remove demo-heartbeat >/dev/null
  say "demo OK"
  exit 0
fi
echo "Running; Ctrl-C stops the API, the worker and the scheduler."
wait
