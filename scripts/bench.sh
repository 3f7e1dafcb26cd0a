#!/usr/bin/env bash
# Runs a benchmark of benches/ with its peers installed: scripts/bench.sh queue
# Results go to stdout as a markdown table; docs/benchmarks.md records them with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/python-venv.sh
cargo build --release -p hdx-jobs-cli
if [ "${1:-}" = tiles ] && [ ! -x target/bench-tools/bin/martin ]; then
  # martin from crates.io, the tile server to beat (PostgreSQL sources only: its rendering
  # feature clones a repository from GitHub), installed here, never committed.
  cargo install martin --version 1.14.0 --locked --no-default-features --features postgres \
    --root target/bench-tools
fi
cargo bench -p hdx-jobs-benches --bench "${1:-queue}"
