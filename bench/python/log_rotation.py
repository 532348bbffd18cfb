"""Python's side of the log-rotation comparison (issue 16).

N processes write L numbered lines each through one handler onto one file
rotated at MAX bytes with enough backups to keep every line; then every file
is read back and the lines counted: lost, duplicated and torn ones.

Handlers: logging.handlers.RotatingFileHandler (thread-safe, not
process-safe: each process rotates from its own view) and, when it is
installed, concurrent_log_handler.ConcurrentRotatingFileHandler (a file lock
around every write). brood's side: crates/brood/examples/log_rotation.rs;
bench/log_rotation.sh runs both and prints the ratios.

Usage: python3 bench/python/log_rotation.py [--procs 4] [--lines 100000]
           [--max-bytes 1048576] [--backups 60] [--dir /tmp/...]
Prints one line per handler: name, lines/s, lost, duplicated, torn, files.
"""

import argparse
import glob
import logging
import logging.handlers
import multiprocessing as mp
import os
import re
import shutil
import tempfile
import time

LINE = re.compile(r"^W(\d+) (\d{6}) abcdefghijklmnopqrstuvwxy$")


def make_handler(kind, path, max_bytes, backups):
    if kind == "RotatingFileHandler":
        return logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    from concurrent_log_handler import ConcurrentRotatingFileHandler

    return ConcurrentRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)


def writer(kind, path, max_bytes, backups, wid, lines, start):
    handler = make_handler(kind, path, max_bytes, backups)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(f"w{wid}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    start.wait()
    for seq in range(lines):
        log.info("W%d %06d abcdefghijklmnopqrstuvwxy", wid, seq)
    handler.close()


def count(path, procs, lines):
    seen = {}
    torn = 0
    files = glob.glob(path + "*")
    for name in files:
        if name.endswith(".lock") or os.path.basename(name).startswith("."):
            continue
        with open(name, "rb") as f:
            for raw in f.read().split(b"\n"):
                if not raw:
                    continue
                m = LINE.match(raw.decode("utf-8", "replace"))
                if not m:
                    torn += 1
                    continue
                key = (int(m.group(1)), int(m.group(2)))
                seen[key] = seen.get(key, 0) + 1
    expected = procs * lines
    lost = expected - len(seen)
    dup = sum(n - 1 for n in seen.values())
    return lost, dup, torn, len(files)


def run(kind, args):
    d = tempfile.mkdtemp(prefix="pylog-", dir=args.dir)
    path = os.path.join(d, "app.log")
    ctx = mp.get_context("fork")
    start = ctx.Event()
    ps = [
        ctx.Process(target=writer, args=(kind, path, args.max_bytes, args.backups, w, args.lines, start))
        for w in range(1, args.procs + 1)
    ]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
    secs = time.perf_counter() - t0
    lost, dup, torn, files = count(path, args.procs, args.lines)
    rate = args.procs * args.lines / secs
    print(f"python {kind}\t{rate:.0f} lines/s\tlost {lost}\tduplicated {dup}\ttorn {torn}\tfiles {files}", flush=True)
    shutil.rmtree(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--max-bytes", type=int, default=1 << 20)
    ap.add_argument("--backups", type=int, default=60)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    run("RotatingFileHandler", args)
    try:
        import concurrent_log_handler  # noqa: F401
    except ImportError:
        print("python ConcurrentRotatingFileHandler\tnot installed (pip install concurrent-log-handler)")
        return
    run("ConcurrentRotatingFileHandler", args)


if __name__ == "__main__":
    main()
