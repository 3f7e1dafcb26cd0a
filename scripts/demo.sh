#!/usr/bin/env bash
# Starts hdx-jobs locally and shows it working: a worker (with the scheduler) on the local
# Redis, a few sample jobs (a result, a failure, a timeout, a retried job, a delayed job), their
# outcomes, and `hdx-jobs info`. The worker then keeps running until Ctrl-C.
#
#   scripts/demo.sh           # installs/starts Redis if missing, builds, runs
#   scripts/demo.sh --check   # same, but stops the worker once the samples are done
#
# Redis database: HDX_REDIS_URL (default redis://127.0.0.1:6379/1, HDX's queue database).
# HDX_JOBS_BIN may point at an already built binary.
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
bin="$HDX_JOBS_BIN"
queue="demo"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting a worker with the scheduler on $HDX_REDIS_URL, queue '$queue'"
"$bin" work --with-scheduler --name "demo-worker-$$" --concurrency 4 "$queue" &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT

say "enqueueing sample jobs"
echo_id=$("$bin" enqueue -q "$queue" --func hdx_jobs.echo --args '[{"resource_id": "sample-1"}]' --kwargs '{"lang": "fr"}')
sleep_id=$("$bin" enqueue -q "$queue" --func hdx_jobs.sleep --args '[1]')
fail_id=$("$bin" enqueue -q "$queue" --func hdx_jobs.fail --args '["a sample failure"]')
timeout_id=$("$bin" enqueue -q "$queue" --func hdx_jobs.sleep --args '[30]' --timeout 1)
retry_id=$("$bin" enqueue -q "$queue" --func hdx_jobs.fail --kwargs '{"message": "flaky service", "retryable": true}' --retry 2 --retry-interval 1)
delayed_id=$("$bin" enqueue -q "$queue" --func hdx_jobs.echo --args '["I waited 2 s"]' --in 2)
ids="$echo_id $sleep_id $fail_id $timeout_id $retry_id $delayed_id"
echo "$ids" | tr ' ' '\n'

say "waiting for them to run"
for _ in $(seq 200); do
  pending=0
  for id in $ids; do
    status=$("$bin" job show "$id" --json | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p')
    case "$status" in finished|failed) ;; *) pending=$((pending + 1)) ;; esac
  done
  [ "$pending" = 0 ] && break
  sleep 0.1
done
[ "$pending" = 0 ] || { echo "demo jobs did not finish" >&2; exit 1; }

for id in $echo_id $timeout_id $retry_id $delayed_id; do
  say "hdx-jobs job show $id"
  "$bin" job show "$id"
done
say "hdx-jobs info"
"$bin" info

if $check; then
  say "demo OK"
  exit 0
fi
say "the worker keeps running: enqueue more with '$bin enqueue -q $queue --func hdx_jobs.echo --args [1]'; Ctrl-C stops it"
wait $worker
