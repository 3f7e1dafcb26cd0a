#!/usr/bin/env bash
# Makes target/test-venv: the real Python rq (pinned in testkit/python/requirements.txt) that
# the tests and benchmarks use as their interoperability peer. Reinstalls only when the
# requirements changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${HDX_TEST_VENV:-target/test-venv}"
requirements=testkit/python/requirements.txt
stamp="$venv/.requirements"

if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
echo "[python-venv] installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
