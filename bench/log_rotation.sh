#!/usr/bin/env bash
# Issue 16's log figures, one run: 4 processes x 100,000 lines through one
# log rotated at 1 MiB, brood::log against Python's RotatingFileHandler
# (not process-safe: counts its lost lines) and ConcurrentRotatingFileHandler
# (pip install concurrent-log-handler), with single-process ceilings.
# Usage: bench/log_rotation.sh [flags for both: --procs --lines --max-bytes --backups]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet -p brood --example log_rotation
lscpu | grep -m1 'Model name' || true
target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$target/release/examples/log_rotation" "$@"
python3 bench/python/log_rotation.py "$@"
