"""Times multiprocessing.Process start + join of a target that returns at
once, under the fork, spawn and forkserver start methods.

Prints one TSV line per start method, the same format as the Rust harness:
start<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n

Usage: python3 start_join.py [--iters N] [--only SUBSTRING]
"""

import argparse
import multiprocessing
import time


def noop():
    pass


# (row name, start method, default iterations). spawn starts a fresh
# interpreter each time (~50 ms), so it gets fewer iterations.
WORKLOADS = [
    ("python fork", "fork", 1000),
    ("python spawn", "spawn", 60),
    ("python forkserver", "forkserver", 300),
]
ROUNDS = 10  # each row's iterations run in this many interleaved rounds


def percentile(sorted_times, q):
    return sorted_times[round((len(sorted_times) - 1) * q)]


def once(ctx):
    p = ctx.Process(target=noop)
    p.start()
    p.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, help="override every row's iteration count")
    ap.add_argument("--only", help="run only the rows whose name (or 'start') contains this")
    args = ap.parse_args()
    rows = [
        (name, multiprocessing.get_context(method), args.iters or default_n)
        for name, method, default_n in WORKLOADS
        if not args.only or args.only in name or args.only in "start"
    ]
    # Warm-up; for forkserver this also starts the server.
    for _, ctx, n in rows:
        for _ in range(min(max(n // 10, 5), 200)):
            once(ctx)
    # Timed iterations, interleaved in rounds so that a burst of load from
    # elsewhere on the machine hits every row alike.
    times = [[] for _ in rows]
    for r in range(ROUNDS):
        for (_, ctx, n), t in zip(rows, times):
            for _ in range(n * (r + 1) // ROUNDS - n * r // ROUNDS):
                start = time.perf_counter()
                once(ctx)
                t.append((time.perf_counter() - start) * 1e6)
    for (name, _, n), t in zip(rows, times):
        t.sort()
        print(
            f"start\t{name}\t{percentile(t, 0.5):.1f}\t{percentile(t, 0.1):.1f}\t"
            f"{percentile(t, 0.9):.1f}\t{n}",
            flush=True,
        )


if __name__ == "__main__":
    main()
