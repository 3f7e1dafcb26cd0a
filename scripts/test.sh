#!/usr/bin/env bash
# The whole test suite: installs what it needs (scripts/setup.sh, the Python rq venv), then
# formatting, lints, rustdoc and every test of the workspace against real Redis and the real
# Python rq.
# Each test leases its own Redis database (2-6, 8-15), so runs never touch databases 0, 1, 7.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/python-venv.sh

# The old service's known results (real HDX files and what it made of them) add tests when a
# checkout of them sits beside the repository (../shared/fixtures) or HDX_TEST_FIXTURES names it.
if [ -z "${HDX_TEST_FIXTURES:-}" ] && [ -d ../shared/fixtures ]; then
  HDX_TEST_FIXTURES="$(cd ../shared/fixtures && pwd)"
  export HDX_TEST_FIXTURES
fi
if [ -n "${HDX_TEST_FIXTURES:-}" ]; then
  echo "[test] shared fixtures: $HDX_TEST_FIXTURES" >&2
else
  echo "[test] shared fixtures absent: the tests on them are reported as ignored (samples/ covers the rest)" >&2
fi

echo "[test] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[test] cargo doc (broken or redundant doc links fail)" >&2
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked
# The queue core as an embedder builds it (no HDX task, no GDAL): a second configuration of the
# library alone, the rest of the workspace needs the default features.
echo "[test] hdx-jobs --no-default-features (clippy, tests)" >&2
cargo clippy -p hdx-jobs --no-default-features --all-targets --locked -- -D warnings
cargo test -p hdx-jobs --no-default-features --locked
# The examples as an outside service builds them: hdx-jobs with default-features = false and
# only its root re-exports (the event consumer example needs the events feature: left out here).
cargo test -p hdx-jobs-examples --no-default-features --locked
echo "[test] cargo build --release (the binary of the container image test)" >&2
cargo build --release --locked -p hdx-jobs-cli
# A build script that reruns when nothing changed relinks every build: the second must be idle.
echo "[test] a second cargo build compiles nothing" >&2
if cargo build --release --locked -p hdx-jobs-cli 2>&1 | grep -E '^ *Compiling '; then
  echo "[test] the second build compiled again: a build script watches a changing or missing path" >&2
  exit 1
fi
echo "[test] cargo test" >&2
# --no-fail-fast: one failing test binary must not hide what the others would report.
# The output is kept to count the ignored tests (those on the shared fixtures where they are
# absent): a test that did not run must not read as passed. The exit status is cargo's.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" | tee "$log" || status=$?
# "test result: ok. 12 passed; 0 failed; 2 ignored; ..." : the number before "ignored".
ignored="$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^ignored/) n += $i }
                END { print n + 0 }' "$log")"
echo "[test] $ignored test(s) ignored" >&2
grep -E '^test .* \.\.\. ignored' "$log" | sed 's/^/[test]   /' >&2 || true
exit "$status"
