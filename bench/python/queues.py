"""(Named queues.py, not queue.py: that name would shadow the standard
library's `queue` module, which multiprocessing imports.)

Times multiprocessing's Queue and SimpleQueue: the Python rows of the
"Queues" table, and (with --report) the table itself.

The tests are the Rust harness's (bench/src/queue.rs), with fewer messages
(Python is slower); every child is a fork-context Process:

- 1to1-8B: one producer puts N ints (8-byte payloads), the parent gets
  them; million messages per second, from the go to the last get.
- 1to1-1MiB: the same with 1 MiB bytes objects; GB/s.
- 4x4-8B: four producers put N ints in all, four consumers get until a
  sentinel each; million messages per second, from the go to the last
  consumer's exit.
- rtt: a request on one queue, the reply on another; the median of 100
  batches of 100 round trips; microseconds.

Prints the Rust harness's TSV lines: queue<TAB>test<TAB>name<TAB>value<TAB>n

Usage: python3 queues.py [--iters N] [--only SUBSTRING]   (--iters is ignored)
       python3 queues.py --report FILE...   (the markdown table of every
       `queue` line in the files, with the issue's ratios and targets)
"""

import argparse
import fileinput
import multiprocessing
import statistics
import time

ctx = multiprocessing.get_context("fork")
RUNS = 3
SMALL_N = 200_000
BIG_N = 200
MIB = 1 << 20


def _produce(q, go, n, payload):
    go.wait()
    for i in range(n):
        q.put(payload if payload is not None else i)


def stream(make, n, payload):
    q = make()
    go = ctx.Event()
    p = ctx.Process(target=_produce, args=(q, go, n, payload))
    p.start()
    time.sleep(0.001)
    t = time.perf_counter()
    go.set()
    get = q.get
    for _ in range(n):
        get()
    secs = time.perf_counter() - t
    p.join()
    return secs


def _consume(q, go, done):
    go.wait()
    get = q.get
    n = 0
    while get() is not None:
        n += 1
    done.put(n)


def four_by_four(make, n):
    q, done = make(), ctx.Queue()
    go = ctx.Event()
    producers = [ctx.Process(target=_produce, args=(q, go, n // 4, None)) for _ in range(4)]
    consumers = [ctx.Process(target=_consume, args=(q, go, done)) for _ in range(4)]
    for p in producers + consumers:
        p.start()
    time.sleep(0.005)
    t = time.perf_counter()
    go.set()
    for p in producers:
        p.join()
    for _ in consumers:
        q.put(None)
    total = sum(done.get() for _ in consumers)
    for c in consumers:
        c.join()
    secs = time.perf_counter() - t
    assert total == n // 4 * 4, total
    return total / secs / 1e6


def _echo(req, rep):
    while True:
        m = req.get()
        if m is None:
            return
        rep.put(m)


def rtt(make):
    req, rep = make(), make()
    p = ctx.Process(target=_echo, args=(req, rep))
    p.start()
    put, get = req.put, rep.get
    for i in range(500):
        put(i)
        get()
    us = []
    for _ in range(100):
        t = time.perf_counter()
        for i in range(100):
            put(i)
            get()
        us.append((time.perf_counter() - t) * 1e6 / 100)
    req.put(None)
    p.join()
    return statistics.median(us)


ROWS = [
    ("1to1-8B", "python Queue", lambda: SMALL_N / stream(ctx.Queue, SMALL_N, None) / 1e6, SMALL_N),
    ("1to1-8B", "python SimpleQueue",
     lambda: SMALL_N / stream(ctx.SimpleQueue, SMALL_N, None) / 1e6, SMALL_N),
    ("1to1-1MiB", "python Queue",
     lambda: BIG_N * MIB / stream(ctx.Queue, BIG_N, b"\x07" * MIB) / 1e9, BIG_N),
    ("1to1-1MiB", "python SimpleQueue",
     lambda: BIG_N * MIB / stream(ctx.SimpleQueue, BIG_N, b"\x07" * MIB) / 1e9, BIG_N),
    ("4x4-8B", "python Queue", lambda: four_by_four(ctx.Queue, SMALL_N), SMALL_N),
    ("4x4-8B", "python SimpleQueue", lambda: four_by_four(ctx.SimpleQueue, SMALL_N), SMALL_N),
    ("rtt", "python Queue", lambda: rtt(ctx.Queue), 10_000),
    ("rtt", "python SimpleQueue", lambda: rtt(ctx.SimpleQueue), 10_000),
]


def measure(only):
    rows = [r for r in ROWS if only is None or only in r[1] or only in "queue " + r[0]]
    results = [[] for _ in rows]
    for _ in range(RUNS):
        for (test, name, f, n), out in zip(rows, results):
            out.append(f())
    for (test, name, f, n), out in zip(rows, results):
        print(f"queue\t{test}\t{name}\t{statistics.median(out):.3f}\t{n}", flush=True)


# ----- the report -----

TESTS = [
    ("1to1-8B", "One producer → one consumer, 8-byte messages", "M msgs/s", True),
    ("1to1-1MiB", "One producer → one consumer, 1 MiB messages", "GB/s", True),
    ("4x4-8B", "4 producers × 4 consumers, 8-byte messages", "M msgs/s", True),
    ("rtt", "Ping-pong round trip (request queue, reply queue), both sides busy", "µs", False),
]
BROOD_SMALL = "brood Queue<u64> (4 MiB ring)"
BROOD_BIG = "brood Queue<ByteBuf> (4 MiB ring)"
C_RING = "C SPSC ring (spin, then futex)"
PY_Q = "python Queue"

# (what, test, numerator, denominator or None for the row's own value,
# target (op, value) or None); a 4x4 ratio names another test's row as
# (test, row).
RATIOS = [
    ("1→1 8 B: brood / python Queue", "1to1-8B", BROOD_SMALL, PY_Q, (">=", 40.0)),
    ("1→1 8 B: brood / C ring", "1to1-8B", BROOD_SMALL, C_RING, (">=", 0.40)),
    ("1→1 8 B: brood / ipc-channel", "1to1-8B", BROOD_SMALL,
     "ipc-channel IpcSender<u64> (fork)", None),
    ("4×4 8 B: brood 1→1 / brood 4×4 (per message)", "4x4-8B", ("1to1-8B", BROOD_SMALL),
     BROOD_SMALL, ("<=", 3.0)),
    ("4×4 8 B: brood / python Queue", "4x4-8B", BROOD_SMALL, PY_Q, None),
    ("1→1 1 MiB: brood / C ring", "1to1-1MiB", BROOD_BIG, C_RING, (">=", 0.75)),
    ("1→1 1 MiB: brood / python Queue", "1to1-1MiB", BROOD_BIG, PY_Q, (">=", 10.0)),
    ("1→1 1 MiB: brood / ipc-channel", "1to1-1MiB", BROOD_BIG,
     "ipc-channel IpcBytesSender (fork)", None),
    ("round trip: brood, µs", "rtt", BROOD_SMALL, None, ("<=", 1.0)),
    ("round trip: python Queue / brood", "rtt", PY_Q, BROOD_SMALL, (">=", 20.0)),
    ("round trip: brood / C ring", "rtt", BROOD_SMALL, C_RING, None),
]


def report(files):
    data = {}
    for line in fileinput.input(files):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 5 and parts[0] == "queue":
            data.setdefault(parts[1], {})[parts[2]] = float(parts[3])
    if not data:
        return
    print("## Queues\n")
    print("brood's `Queue` against a raw shared-memory SPSC ring in C (`bench/c/ring.c`: "
          "spin, then futex; the floor), ipc-channel, crossbeam-channel between threads "
          "(the in-process ceiling) and Python's `multiprocessing.Queue`/`SimpleQueue` "
          "(fork context). Medians of 5 runs (Python: 3). Rust, C and Python rows run one "
          "after the other in one `bench/run`.\n")
    for test, title, unit, more in TESTS:
        rows = data.get(test, {})
        if not rows:
            continue
        print(f"### {title} ({unit}, {'more' if more else 'less'} is better)\n")
        print(f"| row | {unit} |")
        print("|---|---:|")
        for name, v in sorted(rows.items(), key=lambda kv: -kv[1] if more else kv[1]):
            print(f"| {name} | {v:.3f} |")
        print()
    print("### Ratios and targets\n")
    print("| ratio | value | target | met |")
    print("|---|---:|---|---|")

    def value(test, row):
        if isinstance(row, tuple):
            test, row = row
        return data.get(test, {}).get(row)

    for what, test, num, den, target in RATIOS:
        a = value(test, num)
        b = value(test, den) if den is not None else 1.0
        if a is None or b is None or b == 0:
            print(f"| {what} | (missing) | {target or ''} | |")
            continue
        r = a / b
        met = ""
        if target:
            op, t = target
            met = "yes" if (r >= t if op == ">=" else r <= t) else "**no**"
        tgt = f"{target[0]} {target[1]:g}" if target else ""
        print(f"| {what} | {r:.2f} | {tgt} | {met} |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int)
    ap.add_argument("--only")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.report:
        report(args.files)
    else:
        measure(args.only)


if __name__ == "__main__":
    main()
