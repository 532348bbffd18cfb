#!/usr/bin/env bash
# The whole test suite, on a fresh machine with a Rust toolchain and python3.
# Installs what it needs (cargo-nextest when missing), then: format check,
# clippy with warnings as errors, every test under nextest, the doctests, and
# the suite once more under plain `cargo test` (it must pass under both).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# Shared-memory names brood (and its tests) create; none may outlive the run.
shm_before=$(ls /dev/shm 2>/dev/null | grep '^brood' | sort || true)

# Every step has a hard bound, so a hang fails the run instead of stalling CI.
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
timeout 1200 cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" timeout 900 cargo doc -p brood -p brood-macros --no-deps
echo "== cargo nextest run"
timeout 1200 cargo nextest run --workspace --profile ci
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
# No test may leave a zombie behind in this shell's process tree.
zombies=$(ps -eo stat=,ppid= | awk -v me=$$ '$1 ~ /^Z/ && $2 == me' | wc -l)
if [ "$zombies" -ne 0 ]; then echo "zombies left: $zombies"; exit 1; fi
# Trackers unlink after their last user exits: give them a few seconds.
for _ in $(seq 20); do
  shm_after=$(ls /dev/shm 2>/dev/null | grep '^brood' | sort || true)
  leaked=$(comm -13 <(echo "$shm_before") <(echo "$shm_after") | grep . || true)
  [ -z "$leaked" ] && break
  sleep 0.5
done
if [ -n "$leaked" ]; then echo "/dev/shm entries left behind:"; echo "$leaked"; exit 1; fi
echo "all checks passed"
