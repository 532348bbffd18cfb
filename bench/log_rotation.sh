#!/usr/bin/env bash
# Issue 16's log figures, one run: 4 processes x 100,000 lines through one
# log rotated at 1 MiB, brood::log against Python's RotatingFileHandler
# (not process-safe: counts its lost lines) and ConcurrentRotatingFileHandler
# (pip install concurrent-log-handler), with single-process ceilings: brood's
# own LogFile and tracing-appender (bench/examples/tracing_appender_ceiling.rs,
# a dev-dependency of the bench workspace only; it rotates by time only, so
# its rows use daily rotation, never due in a run, and brood has a daily row
# to match). Prints the ratios at the end.
# Usage: bench/log_rotation.sh [flags for all: --procs --lines --max-bytes --backups]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet -p brood --example log_rotation
cargo build --release --quiet --manifest-path bench/Cargo.toml --example tracing_appender_ceiling
target_dir() {
  cargo metadata --format-version 1 --no-deps "$@" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
lscpu | grep -m1 'Model name' || true
echo "nproc $(nproc), $(uptime | sed 's/.*load average/load average/'), $(date -u '+%F %H:%M UTC')"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
{
  "$(target_dir)/release/examples/log_rotation" "$@"
  "$(target_dir --manifest-path bench/Cargo.toml)/release/examples/tracing_appender_ceiling" "$@"
  python3 bench/python/log_rotation.py "$@"
} | tee "$out"
python3 - "$out" <<'PY'
import sys
rates = {}
for row in open(sys.argv[1]):
    name, _, rest = row.partition("\t")
    if rest.split(" ", 1)[0].isdigit():
        rates[name] = float(rest.split(" ", 1)[0])
def first(test):
    return next((name for name in rates if test(name)), None)
many = first(lambda n: n.startswith("brood LogFile,") and n.endswith("processes"))  # 1 MiB rotation
daily = first(lambda n: n.startswith("brood LogFile,") and n.endswith("daily rotation"))
pairs = [
    (many, "tracing-appender daily, 1 process, direct", "target >= 0.5"),
    (many, "tracing-appender daily, 1 process, non_blocking lossless", "target >= 0.5"),
    (daily, "tracing-appender daily, 1 process, direct", "like for like: daily rotation both"),
    (daily, "tracing-appender daily, 1 process, non_blocking lossless", "like for like: daily rotation both"),
    (many, "brood LogFile, 1 process", "brood's own ceiling"),
    (many, "python ConcurrentRotatingFileHandler", "target >= 10"),
    (many, "python RotatingFileHandler", "loses lines"),
]
print("ratios:")
for a, b, note in pairs:
    if a in rates and b in rates:
        print(f"  {a} / {b}\t{rates[a] / rates[b]:.2f}x\t({note})")
PY
