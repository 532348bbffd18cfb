"""Python's side of the "Pool" table (see bench/src/pool.rs): the same
workloads on multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor,
printing the same TSV lines:

    pool<TAB>workload<TAB>name<TAB>median_rate<TAB>slowest<TAB>fastest<TAB>runs

Rates in tasks (items) per second. With --report FILE..., prints instead the
Markdown section for the pool lines of those files (brood's and Python's),
with the ratios issue 12 asks for and whether this run met them.

Usage: python3 pool.py [--only SUBSTRING] [--iters N (ignored)]
       python3 pool.py --report FILE...
"""

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import Pool

RUNS = 3
TRIVIAL = 50_000       # Python's chunksize-1 rows are slow: fewer tasks, same rate
EXECUTOR = 10_000
AUTOMAP = 1_000_000
APPLY = 10_000
SCALE = 30_000
CPU_TASKS = 8
CPU_SPIN = 300_000


def inc(x):
    return x + 1


def spin(n):
    x = n
    for i in range(n):
        x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
    return x


def rows():
    """(workload, name, processes, run) where run(pool) returns the task count."""
    def pool_map(n, chunksize):
        return lambda p: len(p.map(inc, range(n), chunksize=chunksize))

    def pool_map_auto(n):
        return lambda p: len(p.map(inc, range(n)))

    def imap_unordered(n):
        return lambda p: sum(1 for _ in p.imap_unordered(inc, range(n)))

    def apply_async(n):
        def run(p):
            rs = [p.apply_async(inc, (i,)) for i in range(n)]
            for r in rs:
                r.get()
            return n
        return run

    def cpu(p):
        p.map(spin, [CPU_SPIN] * CPU_TASKS, chunksize=1)
        return CPU_TASKS

    out = [
        ("trivial", "python Pool.map chunksize=1", 2, pool_map(TRIVIAL, 1)),
        ("trivial", "python Pool.imap_unordered", 2, imap_unordered(TRIVIAL)),
        ("trivial", "python ProcessPoolExecutor.map", -2, None),
        ("automap", "python Pool.map (auto chunksize)", 2, pool_map_auto(AUTOMAP)),
        ("apply_async", "python apply_async", 2, apply_async(APPLY)),
        ("cpu", "python 1 worker", 1, cpu),
        ("cpu", "python 2 workers", 2, cpu),
    ]
    for n in (1, 2, 4):
        s = "" if n == 1 else "s"
        out.append(("scale", f"python Pool.map chunksize=1, {n} worker{s}", n,
                    pool_map(SCALE, 1)))
    return out


def measure(only):
    for workload, name, procs, run in rows():
        if only and only not in f"{workload} {name}" and only not in "pool":
            continue
        rates = []
        if procs < 0:  # the executor
            with ProcessPoolExecutor(-procs) as ex:
                list(ex.map(inc, range(1000)))
                for _ in range(RUNS):
                    t = time.perf_counter()
                    n = len(list(ex.map(inc, range(EXECUTOR))))
                    rates.append(n / (time.perf_counter() - t))
        else:
            with Pool(procs) as p:
                p.map(inc, range(1000))
                for _ in range(RUNS):
                    t = time.perf_counter()
                    n = run(p)
                    rates.append(n / (time.perf_counter() - t))
        rates.sort()
        print(f"pool\t{workload}\t{name}\t{rates[len(rates) // 2]:.0f}\t{rates[0]:.0f}"
              f"\t{rates[-1]:.0f}\t{len(rates)}", flush=True)


# ----- the report -----

BROOD_TRIVIAL = "brood chunksize(1).map"
PY_CS1 = "python Pool.map chunksize=1"
FLOOR_PER_RESULT = "raw pre-forked pipes, one write per result (Rust)"
FLOOR_BATCHED = "raw pre-forked pipes, batched both ways (Rust)"

# (what, workload, numerator row, denominator row, target)
RATIOS = [
    ("trivial tasks: brood / Python Pool.map(chunksize=1)", "trivial", BROOD_TRIVIAL, PY_CS1,
     (">=", 20.0)),
    ("trivial tasks: brood / raw floor, one write per result", "trivial", BROOD_TRIVIAL,
     FLOOR_PER_RESULT, (">=", 0.5)),
    ("trivial tasks: brood / raw floor, batched both ways", "trivial", BROOD_TRIVIAL,
     FLOOR_BATCHED, None),
    ("trivial tasks: brood imap_unordered / Python imap_unordered", "trivial",
     "brood imap_unordered", "python Pool.imap_unordered", None),
    ("trivial tasks: brood / ProcessPoolExecutor.map", "trivial", BROOD_TRIVIAL,
     "python ProcessPoolExecutor.map", None),
    ("trivial tasks: brood / procspawn Pool::spawn", "trivial", BROOD_TRIVIAL,
     "procspawn Pool::spawn", None),
    ("apply_async: brood / Python", "apply_async", "brood apply_async", "python apply_async",
     (">=", 20.0)),
    ("auto-chunked map: brood / Python", "automap", "brood map (auto chunksize)",
     "python Pool.map (auto chunksize)", (">=", 3.0)),
    ("CPU-bound: brood 2 workers / 1 worker", "cpu", "brood 2 workers", "brood 1 worker",
     (">=", 1.8)),
    ("CPU-bound: Python 2 workers / 1 worker", "cpu", "python 2 workers", "python 1 worker",
     None),
]


def report(files):
    data = {}
    for path in files:
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 7 and parts[0] == "pool":
                    data.setdefault(parts[1], {})[parts[2]] = tuple(float(x) for x in parts[3:6])
    if not data:
        return
    print()
    print("## Pool")
    print()
    print("`brood::Pool` against Python's `multiprocessing.Pool` and "
          "`ProcessPoolExecutor`, procspawn's pool, and two floors of our own: "
          "pre-forked workers over raw pipes, batched both ways, or writing each "
          "result as soon as it has it (what a pool must do to know which task a "
          "dead worker held, as brood's does). 2 workers unless said; tasks `x + 1`; "
          "median rate of 5 runs (Python: 3 runs), slowest–fastest beside it. Workloads: "
          "**trivial** 100,000 tasks without chunking (Python 50,000, executor and "
          "procspawn 10,000); **automap** `map` over 1,000,000 items with the "
          "automatic chunksize; **apply_async** 10,000 then every `get`; **cpu** "
          "CPU-bound tasks on 1 and 2 workers (Python's loop is shorter: compare "
          "speedups, not rates); **scale** trivial tasks without chunking on 1, 2 "
          "and 4 workers.")
    print()
    print("Command: `bench/run --only pool`")
    print()
    print("| workload | row | rate (tasks/s) | range |")
    print("|---|---|---:|---:|")
    for workload in ("trivial", "automap", "apply_async", "cpu", "scale"):
        for name, (med, lo, hi) in sorted(data.get(workload, {}).items(),
                                          key=lambda kv: -kv[1][0]):
            print(f"| {workload} | {name} | {med:,.0f} | {lo:,.0f}–{hi:,.0f} |")
    print()
    print("| ratio | this run | target | met |")
    print("|---|---:|---|---|")
    for what, workload, num, den, target in RATIOS:
        rows = data.get(workload, {})
        if num not in rows or den not in rows or rows[den][0] == 0:
            continue
        r = rows[num][0] / rows[den][0]
        if target:
            op, v = target
            met = "yes" if (r >= v if op == ">=" else r <= v) else "**no**"
            print(f"| {what} | {r:.2f}x | {op} {v} | {met} |")
        else:
            print(f"| {what} | {r:.2f}x | | |")
    scale = data.get("scale", {})
    line = [f"{n}: {scale[k][0]:,.0f}/s" for n, k in
            ((1, "brood chunksize(1).map, 1 worker"), (2, "brood chunksize(1).map, 2 workers"),
             (4, "brood chunksize(1).map, 4 workers")) if k in scale]
    if line:
        print()
        print("Trivial-task throughput by workers, brood: " + ", ".join(line) + ".")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--report":
        report(args[1:])
    else:
        only = None
        if "--only" in args:
            only = args[args.index("--only") + 1]
        measure(only)
