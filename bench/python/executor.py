"""Python's side of the "Executor" table (see bench/src/executor.rs): the
same workloads on concurrent.futures.ProcessPoolExecutor and, if it is
installed, loky's reusable executor (joblib's), printing the same TSV lines:

    executor<TAB>workload<TAB>name<TAB>median_rate<TAB>slowest<TAB>fastest<TAB>runs

Rates in tasks per second, 2 workers, tasks `x + 1`. With --report FILE...,
prints instead the Markdown section for the executor lines of those files
(brood's and Python's), with the ratios issue 13 asks for and whether this
run met them.

Usage: python3 executor.py [--only SUBSTRING] [--iters N (ignored)]
       python3 executor.py --report FILE...
"""

import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

RUNS = 3
SUBMIT = 10_000


def inc(x):
    return x + 1


def submit_result(ex):
    fs = [ex.submit(inc, x) for x in range(SUBMIT)]
    for x, f in enumerate(fs):
        assert f.result() == x + 1
    return SUBMIT


def submit_as_completed(ex):
    fs = [ex.submit(inc, x) for x in range(SUBMIT)]
    n = 0
    for f in as_completed(fs):
        f.result()
        n += 1
    assert n == SUBMIT
    return n


def executors():
    """(label, factory) for each executor this machine has."""
    out = [("ProcessPoolExecutor", lambda: ProcessPoolExecutor(2))]
    try:
        import loky  # noqa: F401
        out.append(("loky", lambda: loky.get_reusable_executor(max_workers=2, reuse=False)))
    except ImportError:
        print("executor.py: loky is not installed; its rows are left out", file=sys.stderr)
    return out


def measure(only):
    for label, make in executors():
        for workload, name, run in (
            ("submit", f"python {label} submit+result", submit_result),
            ("as_completed", f"python {label} submit+as_completed", submit_as_completed),
        ):
            if only and only not in f"{workload} {name}" and only not in "executor":
                continue
            ex = make()
            try:
                run(ex)  # warm-up: workers started
                rates = []
                for _ in range(RUNS):
                    t = time.perf_counter()
                    n = run(ex)
                    rates.append(n / (time.perf_counter() - t))
            finally:
                ex.shutdown(wait=True)
            rates.sort()
            print(f"executor\t{workload}\t{name}\t{rates[len(rates) // 2]:.0f}\t{rates[0]:.0f}"
                  f"\t{rates[-1]:.0f}\t{len(rates)}", flush=True)


# ----- the report -----

PPE = "python ProcessPoolExecutor"

# (what, workload, numerator row, denominator row, target)
RATIOS = [
    ("submit+result: brood / ProcessPoolExecutor", "submit", "brood submit+result",
     f"{PPE} submit+result", (">=", 50.0)),
    ("submit+result: brood / loky", "submit", "brood submit+result",
     "python loky submit+result", None),
    ("as_completed: brood / ProcessPoolExecutor", "as_completed", "brood submit+as_completed",
     f"{PPE} submit+as_completed", (">=", 50.0)),
    ("as_completed: brood / loky", "as_completed", "brood submit+as_completed",
     "python loky submit+as_completed", None),
    ("hard time limit: map with / without (cost: 1 - this)", "limits",
     "brood chunksize(1).map, hard limit on", "brood chunksize(1).map, no limit", (">=", 0.95)),
    ("soft time limit: map with / without", "limits",
     "brood chunksize(1).map, soft limit on", "brood chunksize(1).map, no limit", (">=", 0.95)),
    ("hard time limit: submit+result with / without", "limits",
     "brood submit+result, hard limit on", "brood submit+result, no limit", (">=", 0.95)),
    ("hard time limit: map CPU per task, with / without", "cpu",
     "brood chunksize(1).map, hard limit on", "brood chunksize(1).map, no limit", ("<=", 1.05)),
    ("soft time limit: map CPU per task, with / without", "cpu",
     "brood chunksize(1).map, soft limit on", "brood chunksize(1).map, no limit", ("<=", 1.05)),
    ("hard time limit: submit+result CPU per task, with / without", "cpu",
     "brood submit+result, hard limit on", "brood submit+result, no limit", ("<=", 1.05)),
]


def report(files):
    data = {}
    for path in files:
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 7 and parts[0] == "executor":
                    data.setdefault(parts[1], {})[parts[2]] = tuple(float(x) for x in parts[3:6])
    if not data:
        return
    print()
    print("## Executor")
    print()
    print("`brood::Pool` as `concurrent.futures` (`submit`, `TaskFuture::result`, "
          "`brood::as_completed`) against Python's `ProcessPoolExecutor` and loky's "
          "reusable executor, and the cost of time limits on trivial tasks. 2 workers; "
          "tasks `x + 1`; 10,000 futures per run (the `map` rows: 100,000 tasks, chunksize 1); "
          "median rate of 7 runs (Python: 3), slowest–fastest beside it; the brood rows "
          "run interleaved run by run. The limit rows set a 60 s limit that is never "
          "reached: they measure its bookkeeping.")
    print()
    print("Command: `bench/run --only executor`")
    print()
    print("| workload | row | rate (tasks/s) | range |")
    print("|---|---|---:|---:|")
    for workload in ("submit", "as_completed", "limits"):
        for name, (med, lo, hi) in sorted(data.get(workload, {}).items(),
                                          key=lambda kv: -kv[1][0]):
            print(f"| {workload} | {name} | {med:,.0f} | {lo:,.0f}–{hi:,.0f} |")
    if data.get("cpu"):
        print()
        print("CPU time per task of the `limits` rows (this process — caller and "
              "supervisor — plus the workers; less disturbed by the machine's load "
              "than the rates):")
        print()
        print("| row | CPU ns per task | least–most |")
        print("|---|---:|---:|")
        for name, (med, lo, hi) in data["cpu"].items():
            print(f"| {name} | {med:,.0f} | {lo:,.0f}–{hi:,.0f} |")
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


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--report":
        report(args[1:])
    else:
        only = None
        if "--only" in args:
            only = args[args.index("--only") + 1]
        measure(only)
