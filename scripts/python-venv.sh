#!/usr/bin/env bash
# Makes the Python peers of the tests and benchmarks, each pinned in testkit/python/:
#   target/test-venv        rq 2.12, rq-scheduler, rq-dashboard 0.9, schemathesis, Flask
#                           (requirements.txt)
#   target/test-venv-rq113  rq 1.13 and rq-dashboard 0.7.1.2, the old service's Python side
#                           (requirements-rq113.txt)
# Reinstalls a venv only when its requirements changed.
set -euo pipefail
cd "$(dirname "$0")/.."

make_venv() {
  local venv=$1 requirements=$2
  local stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
    return 0
  fi
  echo "[python-venv] installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}

make_venv "${HDX_TEST_VENV:-target/test-venv}" testkit/python/requirements.txt
make_venv "${HDX_TEST_VENV_RQ113:-target/test-venv-rq113}" testkit/python/requirements-rq113.txt
