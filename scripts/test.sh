#!/usr/bin/env bash
# The whole test suite, on a fresh machine with a Rust toolchain and python3.
# Installs what it needs (cargo-nextest when missing), then: format check,
# clippy with warnings as errors (the benchmarks too), every test under
# nextest, the doctests, and the suite once more under plain `cargo test` (it
# must pass under both). It all runs under a child subreaper
# (crates/brood/examples/reap.rs): any process a test leaves behind is
# re-parented to it instead of to init, and still alive at the end, fails
# the run.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

if ! python3 -c 'import multiprocessing.shared_memory' 2>/dev/null; then
  echo "python3 (3.8+, with multiprocessing.shared_memory) is required: the interop tests run it"
  exit 1
fi

if ! command -v redis-server >/dev/null 2>&1; then
  # brood-redis's tests start a real redis-server on a private port.
  echo "== installing redis-server"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y redis-server >/dev/null 2>&1 ||
    { $sudo apt-get update >/dev/null && $sudo apt-get install -y redis-server >/dev/null; }
  # Debian starts a system redis on 6379 after install; the tests never use it.
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

if [ -z "${BROOD_UNDER_REAPER:-}" ]; then
  echo "== building the leftover-process check"
  cargo build -q -p brood --example reap
  target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  reap="$target/debug/examples/reap"
  # The check must catch a deliberately leaked child, or it checks nothing.
  if "$reap" --grace 0.5 -- sh -c 'sleep 30 & exit 0' 2>/dev/null; then
    echo "the leftover-process check missed a deliberately leaked child"
    exit 1
  fi
  echo "   it caught a deliberately leaked child; now the suite, under it"
  BROOD_UNDER_REAPER=1 exec "$reap" --grace 20 -- "$self" "$@"
fi

# Shared-memory names brood (and its tests) create; none may outlive the run.
shm_before=$(ls /dev/shm 2>/dev/null | grep '^brood' | sort || true)

# Every step has a hard bound, so a hang fails the run instead of stalling CI.
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
timeout 1200 cargo clippy --workspace --all-targets -- -D warnings
echo "== bench: fmt and clippy (procspawn and ipc-channel come from crates.io)"
cargo fmt --manifest-path bench/Cargo.toml -- --check
timeout 1200 cargo clippy --manifest-path bench/Cargo.toml --all-targets -- -D warnings
echo "== bench charts (bench/charts/*.svg parse and match bench/results*.md)"
timeout 60 python3 bench/charts.py --check
echo "== cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" timeout 900 cargo doc -p brood -p brood-macros --no-deps
echo "== cargo nextest run"
# The full 10,000 spawn start/join cycles here (issue 8's figure); the
# plain pass below keeps leaks.rs's default of 2,000.
BROOD_SPAWN_CYCLES=10000 timeout 1200 cargo nextest run --workspace --profile ci
echo "== cargo test --doc"
timeout 900 cargo test --workspace --doc
echo "== cargo test (plain libtest harness)"
# One test at a time: libtest's main thread prints each result to stdout,
# and a test that forks with allow_fork_with_threads() while it holds
# stdout's lock would hand the child a lock nobody releases (the hazard
# that option's contract names). nextest above runs each test in its own
# process, where the main thread only waits.
timeout 900 cargo test --workspace --tests -- --test-threads=1
echo "== examples"
for example in hello smoke; do
  timeout 300 cargo run -q -p brood --example "$example"
done
echo "== leftovers"
# Processes left behind are counted by the subreaper this script runs
# under, once it ends. Trackers unlink after their last user exits: give
# them a few seconds.
for _ in $(seq 20); do
  shm_after=$(ls /dev/shm 2>/dev/null | grep '^brood' | sort || true)
  leaked=$(comm -13 <(echo "$shm_before") <(echo "$shm_after") | grep . || true)
  [ -z "$leaked" ] && break
  sleep 0.5
done
if [ -n "$leaked" ]; then echo "/dev/shm entries left behind:"; echo "$leaked"; exit 1; fi
echo "all checks passed; the subreaper now checks for leftover processes"
