#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh, the Python rq venv), then
# formatting, lints and every test of the workspace against real Redis and the real Python rq.
# Each test leases its own Redis database (2-6, 8-15), so runs never touch databases 0, 1, 7.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/python-venv.sh

# The shared HDX fixtures (real files with known results) add tests where this machine has them.
if [ -z "${HDX_TEST_FIXTURES:-}" ] && [ -d ../shared/fixtures ]; then
  HDX_TEST_FIXTURES="$(cd ../shared/fixtures && pwd)"
  export HDX_TEST_FIXTURES
fi
if [ -n "${HDX_TEST_FIXTURES:-}" ]; then
  echo "[test] shared fixtures: $HDX_TEST_FIXTURES" >&2
else
  echo "[test] shared fixtures absent: the tests on them are skipped (samples/ covers the rest)" >&2
fi

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[test] cargo build --release (the binary of the container image test)" >&2
cargo build --release --locked -p hdx-jobs-cli
echo "[test] cargo test" >&2
# --no-fail-fast: one failing test binary must not hide what the others would report.
cargo test --workspace --locked --no-fail-fast "$@"
