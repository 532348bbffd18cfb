"""Turns the harnesses' TSV lines into the report's tables, one per topic.

Reads lines from the files given (or stdin), the table's name first:

    start<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n
    rtt<TAB>cpus<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n
    bw<TAB>cpus<TAB>name<TAB>GBps<TAB>slowest_run_GBps<TAB>fastest_run_GBps<TAB>runs<TAB>MiB_per_run
    sync<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n

and prints, for each topic that has rows, a table and the ratios that the
issues ask for, each with its target and whether this run met it:

- start + join: each row's median over the raw-fork floor, and on each
  `brood X` row the `python X` median over it (above 1: brood is faster);
- pipes: round trip (`rtt`) and throughput (`bw`) side by side per
  transport and per CPU placement (`cpus`: how many CPUs the harness and
  its children were allowed), each against the raw socketpair in C;
- shared memory and locks (`sync`): per test (lock pairs, locked counter,
  array fill, 100 MiB shared memory write, semaphore ping-pong), each row
  against the test's C floor, and each brood row against the best Python row.

Usage: python3 report.py [--command CMD] FILE...
"""

import argparse
import fileinput

START_FLOOR = "raw fork+_exit+waitpid"
PIPE_FLOOR = "raw socketpair (C)"
BROOD_BYTES = "brood Connection send_bytes/recv_bytes"
BROOD_VALUE = "brood Connection send/recv (serde_bytes)"
PY_BYTES = "python Pipe send_bytes/recv_bytes"
PY_VALUE = "python Pipe send/recv (bytes)"
IPC_BYTES = "ipc-channel IpcBytesSender (fork)"
IPC_VALUE = "ipc-channel IpcSender<ByteBuf> (fork)"

# (what, metric, numerator row, denominator row, target as (op, value) or None)
# A ratio is numerator / denominator of the metric: the median time for
# `start` and `rtt`, GB/s for `bw`.
START_RATIOS = [
    ("brood spawn / re-exec floor", "start", "brood spawn",
     "re-exec floor (same binary, does nothing)", ("<=", 1.2)),
    ("brood forkserver / brood fork", "start", "brood forkserver", "brood fork", ("<=", 1.6)),
    # Issue 10's target: the median of per-pair ratios (`start-paired`: raw
    # and brood fork alternating, each pair back to back); the ratio of the
    # rows' medians, whose blocks of 200 iterations each see the machine at
    # other moments, beside it.
    ("brood fork / raw fork, pair by pair (median of the pairs' ratios)", "start-paired",
     "brood fork", None, ("<=", 1.3)),
    ("brood fork / raw fork (ratio of the rows' medians)", "start", "brood fork", START_FLOOR,
     None),
    ("python fork / brood fork", "start", "python fork", "brood fork", (">=", 10)),
    ("python spawn / brood spawn", "start", "python spawn", "brood spawn", None),
    ("python forkserver / brood forkserver", "start", "python forkserver",
     "brood forkserver", None),
    ("procspawn / brood spawn", "start", "procspawn (re-exec)", "brood spawn", None),
]
PIPE_RATIOS = [
    ("round trip: brood send_bytes / raw socketpair", "rtt", BROOD_BYTES, PIPE_FLOOR,
     ("<=", 1.15)),
    ("round trip: ipc-channel bytes / brood send_bytes", "rtt", IPC_BYTES, BROOD_BYTES, None),
    ("round trip: python send_bytes / brood send_bytes", "rtt", PY_BYTES, BROOD_BYTES, None),
    ("round trip: python send / brood send", "rtt", PY_VALUE, BROOD_VALUE, None),
    ("throughput: brood send_bytes / raw socketpair", "bw", BROOD_BYTES, PIPE_FLOOR,
     (">=", 0.75)),
    ("throughput: brood send_bytes / python send_bytes", "bw", BROOD_BYTES, PY_BYTES,
     (">=", 10.0)),
    ("throughput: brood send_bytes / ipc-channel bytes", "bw", BROOD_BYTES, IPC_BYTES,
     (">=", 1.5)),
    ("throughput: brood send / python send", "bw", BROOD_VALUE, PY_VALUE, None),
    ("throughput: brood send / ipc-channel IpcSender", "bw", BROOD_VALUE, IPC_VALUE, None),
    ("throughput: raw socketpair / python send_bytes", "bw", PIPE_FLOOR, PY_BYTES, None),
]

# The sync table. Per test: its title, its unit (the harnesses' median, lo
# and hi are in it), whether more is better, and its C floor.
C_FUTEX = "C futex mutex (3-state, shared)"
C_ROBUST = "C pthread mutex (pshared, robust, errorcheck)"
C_FILL = "C futex mutex + memcpy"
C_MEMCPY = "C memcpy"
C_MEMSET = "C memset"
C_SEM = "C sem_t (pshared)"
C_ROBUST_INLINE = "C robust-list protocol inline (brood's fast path in C)"
C_GLIBC_INLINE = "C glibc's robust-list protocol inline"
C_TID = "C futex word holding the owner's TID"
BROOD_GUARD = "brood Lock lock() guard"
BROOD_ACQUIRE = "brood Lock acquire/release"
BROOD_COUNTER = "brood Value<i64> lock() += 1"
BROOD_FILL = "brood Array<f64> lock() + copy_from_slice"
BROOD_WRITE_AT = "brood SharedMemory write_at (memcpy)"
BROOD_MEMSET = "brood SharedMemory as_mut_slice().fill (memset)"
BROOD_SEM = "brood Semaphore"
PY_LOCK = "python Lock acquire/release"
PY_COUNTER = "python Value('q') with get_lock(): .value += 1"
PY_SHM = "python SharedMemory buf[:] = bytes"
PY_SEM = "python Semaphore"
BROOD_CREATE = "brood Value<i64>::new + Lock::new"
PY_CREATE = "python Value('q') + Lock()"
BEST_PY = "best python row"  # stands for the test's fastest python row

SYNC_TESTS = {
    "lock": ("Uncontended lock acquire + release, one process", "Mps", True, C_FUTEX),
    "counter": ("Locked counter: 2 processes × 100k increments", "ms", False, C_FUTEX),
    "counter-pinned": ("Locked counter, all on one CPU", "ms", False, C_FUTEX),
    "fill": ("Array of 1M f64 filled by a child (the child's fill only)", "us", False, C_FILL),
    "shm": ("SharedMemory 100 MiB write, a fresh segment per run", "GBps", True, C_MEMCPY),
    "sem": ("Semaphore ping-pong round trip, as the scheduler places them", "us", False, C_SEM),
    "sem-pinned": ("Semaphore ping-pong round trip, both on one CPU", "us", False, C_SEM),
    "create": ("10,000 Values and 10,000 Locks made", "ms", False, None),
}
# Tests whose brood rows are not compared with Python's: where the scheduler
# puts each pair of processes (one CPU or two) outweighs the rest, and the
# Python harness runs apart.
SYNC_NO_PY = {"sem"}
# Rows measured against another floor than their test's.
SYNC_FLOOR = {BROOD_MEMSET: C_MEMSET, C_MEMSET: C_MEMSET}

# (what, test, numerator row, denominator row or None for the numerator's
# own value, target as (op, value) or None). Denominator BEST_PY: the test's
# fastest python row.
SYNC_RATIOS = [
    ("lock: brood lock() guard, M pairs/s", "lock", BROOD_GUARD, None, None),
    ("lock: brood acquire/release, M pairs/s", "lock", BROOD_ACQUIRE, None, None),
    # Issue 10: a share of the C futex mutex measured in the same run, so
    # the target holds on a machine whose atomics are slower or faster.
    ("lock: brood lock() guard / C futex mutex", "lock", BROOD_GUARD, C_FUTEX,
     (">=", 0.60)),
    ("lock: brood acquire/release / C futex mutex", "lock", BROOD_ACQUIRE, C_FUTEX,
     (">=", 0.60)),
    ("lock: brood lock() guard / C robust pthread mutex", "lock", BROOD_GUARD, C_ROBUST, None),
    ("lock: brood lock() guard / its protocol inline in C", "lock", BROOD_GUARD, C_ROBUST_INLINE,
     None),
    ("lock: brood's parked protocol inline in C / C futex mutex", "lock", C_ROBUST_INLINE,
     C_FUTEX, None),
    ("lock: glibc's robust-list protocol inline in C / C futex mutex", "lock", C_GLIBC_INLINE,
     C_FUTEX, None),
    ("lock: TID futex word (liveness-polling design) / C futex mutex", "lock", C_TID, C_FUTEX,
     None),
    ("lock: brood lock() guard / python Lock", "lock", BROOD_GUARD, PY_LOCK, None),
    ("counter: brood / C futex mutex", "counter", BROOD_COUNTER, C_FUTEX, ("<=", 2.0)),
    ("counter: python / brood", "counter", PY_COUNTER, BROOD_COUNTER, (">=", 20.0)),
    ("counter: brood / C robust pthread mutex", "counter", BROOD_COUNTER, C_ROBUST, None),
    ("counter, one CPU: brood / C futex mutex", "counter-pinned", BROOD_COUNTER, C_FUTEX,
     ("<=", 2.0)),
    ("counter, one CPU: python / brood", "counter-pinned", PY_COUNTER, BROOD_COUNTER,
     (">=", 20.0)),
    ("counter, one CPU: brood / C robust pthread mutex", "counter-pinned", BROOD_COUNTER,
     C_ROBUST, None),
    ("fill: brood / C", "fill", BROOD_FILL, C_FILL, ("<=", 1.2)),
    ("fill: best python / brood", "fill", BEST_PY, BROOD_FILL, None),
    # (median of per-pair ratios: see the shm-paired lines)
    ("shm: brood write_at / C memcpy", "shm", BROOD_WRITE_AT, C_MEMCPY, (">=", 0.95)),
    ("shm: brood as_mut_slice().fill / C memset", "shm", BROOD_MEMSET, C_MEMSET, (">=", 0.90)),
    ("shm: python buf[:] / C memcpy", "shm", PY_SHM, C_MEMCPY, None),
    ("sem: brood / C sem_t", "sem", BROOD_SEM, C_SEM, None),
    ("sem, one CPU: brood / C sem_t", "sem-pinned", BROOD_SEM, C_SEM, None),
    ("sem, one CPU: python / brood", "sem-pinned", PY_SEM, BROOD_SEM, None),
    ("create: python / brood", "create", PY_CREATE, BROOD_CREATE, (">=", 1.0)),
]


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs" if us >= 100 else f"{us:.2f} µs"


def fmt_ratio(r, as_share, digits=2):
    """`digits` decimals for a ratio, `digits - 2` for a percentage."""
    return f"{r * 100:.{max(digits - 2, 0)}f}%" if as_share else f"{r:.{digits}f}x"


def cpus_label(cpus):
    return "1 CPU" if cpus == 1 else f"{cpus} CPUs"


def ratios_table(specs, data, placements=(None,)):
    """The ratios whose rows are all there, as a markdown table; pipe ratios
    once per CPU placement."""
    lines = []
    for what, metric, num, den, target in specs:
        for cpus in placements:
            rows = data.get(metric if cpus is None else (metric, cpus), {})
            a = rows.get(num)
            # No denominator: the row's value is a ratio already.
            b = (1.0,) if den is None else rows.get(den)
            if not a or not b:
                continue
            r = a[0] / b[0]
            # A throughput share of the floor reads best as a percentage.
            as_share = metric == "bw" and den == PIPE_FLOOR
            shown = fmt_ratio(r, as_share)
            if target:
                op, value = target
                met = r <= value if op == "<=" else r >= value
                want = f"{'≤' if op == '<=' else '≥'} {fmt_ratio(value, as_share)}"
                verdict = "met" if met else "**missed**"
                # One more decimal where rounding would hide which side it is.
                shown = fmt_ratio(r, as_share, 3)
            else:
                want, verdict = "", ""
            where = "" if cpus is None else f" ({cpus_label(cpus)})"
            lines.append(f"| {what}{where} | {shown} | {want} | {verdict} |")
    if not lines:
        return []
    return ["| ratio | this run | target | |", "|---|---:|---:|---|", *lines]


def start_table(data):
    rows = data.get("start", {})
    if not rows:
        return []
    floor = rows.get(START_FLOOR)
    out = [
        "| workload | median | p10 | p90 | n | vs raw fork | Python / brood |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (med, p10, p90, n) in rows.items():
        vs_floor = f"{med / floor[0]:.2f}x" if floor else ""
        py_vs = ""
        if name.startswith("brood "):
            py = rows.get("python " + name[len("brood "):])
            if py:
                py_vs = f"{py[0] / med:.2f}x"
        out.append(
            f"| {name} | {fmt_us(med)} | {fmt_us(p10)} | {fmt_us(p90)} | {n:.0f} "
            f"| {vs_floor} | {py_vs} |"
        )
    return out


def placements(data):
    """The CPU counts the pipes table ran with, most first."""
    return sorted({k[1] for k in data if isinstance(k, tuple)}, reverse=True)


def pipes_table(data):
    cpus_list = placements(data)
    names = list(dict.fromkeys(n for k in data if isinstance(k, tuple) for n in data[k]))
    if not names:
        return []
    head = ["transport"]
    for metric, what, vs in (("rtt", "round trip", "vs raw"), ("bw", "1 MiB throughput", "of raw")):
        for cpus in cpus_list:
            head += [f"{what}, {cpus_label(cpus)}", vs]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in names:
        cells = [name]
        for cpus in cpus_list:
            rows = data.get(("rtt", cpus), {})
            floor = rows.get(PIPE_FLOOR)
            if name in rows:
                med, p10, p90, _ = rows[name]
                cells += [
                    f"{fmt_us(med)} ({p10:.1f}–{p90:.1f})",
                    f"{med / floor[0]:.2f}x" if floor else "",
                ]
            else:
                cells += ["", ""]
        for cpus in cpus_list:
            rows = data.get(("bw", cpus), {})
            floor = rows.get(PIPE_FLOOR)
            if name in rows:
                gbps, slow, fast = rows[name][:3]
                cells += [
                    f"{gbps:.2f} GB/s ({slow:.2f}–{fast:.2f})",
                    f"{gbps / floor[0] * 100:.0f}%" if floor else "",
                ]
            else:
                cells += ["", ""]
        out.append("| " + " | ".join(cells) + " |")
    return out


def fmt_sync(value, unit):
    if unit == "Mps":
        return f"{value:.1f} M/s"
    if unit == "GBps":
        return f"{value:.2f} GB/s"
    return fmt_us(value * 1000 if unit == "ms" else value)


def best_python(rows, more_is_better):
    py = [(v[0], n) for n, v in rows.items() if n.startswith("python ")]
    if not py:
        return None
    return (max if more_is_better else min)(py)[1]


def sync_table(data):
    tests = data.get("sync", {})
    if not tests:
        return []
    out = [
        "| test | row | median | range | n | vs C floor | brood's speed-up over Python |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for test, (title, unit, more, floor_name) in SYNC_TESTS.items():
        rows = tests.get(test)
        if not rows:
            continue
        best_py = None if test in SYNC_NO_PY else best_python(rows, more)
        paired = tests.get(f"{test}-paired", {})
        for name, (med, lo, hi, n) in rows.items():
            floor = rows.get(SYNC_FLOOR.get(name, floor_name))
            vs = ""
            if floor:
                # The median of per-pair ratios where the harness made them
                # (shm), else the ratio of the medians.
                r = paired[name][0] if name in paired else med / floor[0]
                vs = f"{r * 100:.0f}%" if more else f"{r:.2f}x"
            speedup = ""
            # (memset has no Python twin)
            if name.startswith("brood ") and best_py and name not in SYNC_FLOOR:
                py = rows[best_py][0]
                speedup = f"{(med / py if more else py / med):.1f}x"
            out.append(
                f"| {test} | {name} | {fmt_sync(med, unit)} | "
                f"{fmt_sync(lo, unit)} – {fmt_sync(hi, unit)} | {n:.0f} | {vs} | {speedup} |"
            )
    return out


def sync_ratios(data):
    tests = data.get("sync", {})
    lines = []
    for what, test, num, den, target in SYNC_RATIOS:
        rows = tests.get(test, {})
        _, unit, more, _ = SYNC_TESTS[test]
        if den == BEST_PY:
            den = best_python(rows, more)
        if num == BEST_PY:
            num = best_python(rows, more)
        a = rows.get(num)
        b = rows.get(den) if den else (1.0,)
        if not a or not b:
            continue
        r = a[0] / b[0]
        paired = tests.get(f"{test}-paired", {})
        if num in paired and den is not None and den.startswith("C "):
            r = paired[num][0]  # the median of per-pair ratios
        # A rate over a C floor reads best as a percentage; an absolute
        # value in its unit.
        as_share = more and den is not None and den.startswith("C ")

        def show(x, digits=2):
            if den is None:
                return fmt_sync(x, unit)
            return fmt_ratio(x, as_share, digits)

        shown = show(r)
        if target:
            op, value = target
            met = r <= value if op == "<=" else r >= value
            want = f"{'≤' if op == '<=' else '≥'} {show(value)}"
            verdict = "met" if met else "**missed**"
            if den is not None:
                shown = show(r, 3)
        else:
            want, verdict = "", ""
        lines.append(f"| {what} | {shown} | {want} | {verdict} |")
    if not lines:
        return []
    return ["| ratio | this run | target | |", "|---|---:|---:|---|", *lines]


# The managers table: per test, its title, unit and whether more is better.
MGR_TESTS = {
    "dict": ("Managed dict insert + get (two round trips)", "us", False),
    "queue": ("Managed queue put + get (two round trips)", "us", False),
    "workers-1": ("Master/worker over TCP, 1 worker, 10k tasks", "kps", True),
    "workers-2": ("Master/worker over TCP, 2 workers, 10k tasks", "kps", True),
    "workers-4": ("Master/worker over TCP, 4 workers, 10k tasks", "kps", True),
}


def fmt_mgr(value, unit):
    return f"{value:.1f} k tasks/s" if unit == "kps" else fmt_us(value)


def manager_table(data):
    tests = data.get("mgr", {})
    if not tests:
        return []
    out = [
        "| test | row | median | range | n | brood's speed-up over Python |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for test, (title, unit, more) in MGR_TESTS.items():
        rows = tests.get(test)
        if not rows:
            continue
        best_py = best_python(rows, more)
        for name, (med, lo, hi, n) in rows.items():
            speedup = ""
            if name.startswith("brood ") and best_py:
                py = rows[best_py][0]
                speedup = f"{(med / py if more else py / med):.1f}x"
            out.append(
                f"| {test} | {name} | {fmt_mgr(med, unit)} | "
                f"{fmt_mgr(lo, unit)} – {fmt_mgr(hi, unit)} | {n:.0f} | {speedup} |"
            )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--command", default="bench/run", help="the command that made the lines")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    data = {}
    for line in fileinput.input(args.files):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 6 and parts[0] in ("start", "start-paired"):
            data.setdefault(parts[0], {})[parts[1]] = tuple(float(x) for x in parts[2:])
        elif len(parts) >= 7 and parts[0] == "sync":
            tests = data.setdefault("sync", {})
            tests.setdefault(parts[1], {})[parts[2]] = tuple(float(x) for x in parts[3:])
        elif len(parts) >= 7 and parts[0] == "mgr":
            tests = data.setdefault("mgr", {})
            tests.setdefault(parts[1], {})[parts[2]] = tuple(float(x) for x in parts[3:])
        elif len(parts) >= 7 and parts[0] in ("rtt", "bw"):
            key = (parts[0], int(parts[1]))
            data.setdefault(key, {})[parts[2]] = tuple(float(x) for x in parts[3:])

    sections = [
        (
            "Start + join",
            "start",
            "Start a child whose function returns at once, and join it: median, p10 "
            "and p90 per iteration. `re-exec floor` is `posix_spawn` of this same "
            "binary with `__BROOD_BOOTSTRAP=noop` (brood's pre-main bootstrap exits "
            "0 at once) and `waitpid`: what any re-exec start costs. The rows run "
            "interleaved in 10 rounds (a block of each row's iterations per round); "
            "then raw fork and brood fork run 2000 pairs, back to back, which goes "
            "first alternating, and the median of the pairs' ratios is brood fork's "
            "cost over raw fork (a pair sees the same moment of the machine: what "
            "else runs, where the child is placed, whether the other CPU sleeps; "
            "the ratio of the two rows' medians swung 1.07–1.55 from run to run of "
            "the same binary on the 2-vCPU Xeon VM, the pairs' 1.19–1.23).",
            start_table(data),
            ratios_table(START_RATIOS, data),
        ),
        (
            "Pipes",
            "pipes",
            "Between a parent and one child: the round trip of an 8-byte message "
            "(parent sends, child echoes; median, p10 and p90 of 20000 after 2000 "
            "warm-up), and the throughput of 1 MiB messages one way (4 runs of "
            "512 MiB, the child acks each run; GB/s = 10^9 payload bytes per second, "
            "all runs' bytes over all their time; the slowest and fastest run in "
            "brackets, after p10–p90 for round trips). Rust and C rows run interleaved "
            "in one process tree; the Python rows run after them. The table runs twice: "
            "as the scheduler places parent and child (on one CPU or two, as it "
            "likes: a round trip across CPUs adds a wake-up on the other CPU), and "
            "pinned to one CPU with `taskset` (parent and child take turns: a round "
            "trip is the software path alone, syscalls, copies and two context "
            "switches).",
            pipes_table(data),
            ratios_table(PIPE_RATIOS, data, placements(data)),
        ),
        (
            "Shared memory and locks",
            "sync",
            "brood's `sync` and `shm` against C floors (`bench/c/sync.c`) and Python's "
            "`multiprocessing`. Each test's rows run interleaved in rounds after one "
            "untimed run each; the Rust and C rows in one harness, the Python rows "
            "after. Median and range (slowest–fastest run; p10–p90 of the round trips "
            "for `sem`). "
            "**lock**: acquire + release pairs of an uncontended lock in one process, "
            "7 runs of 5M pairs (Python: 1M). "
            "**counter**: two forked children each add 1 to a shared int64 100k times, "
            "each increment under the lock; they spin on a go flag, and the time runs "
            "from the parent raising it to the later child's last increment; 15 runs; "
            "as the scheduler places them (on two CPUs they contend: a waiter sleeps "
            "in the kernel and is woken, and the time swings with who barges in), then "
            "all pinned to one CPU (`counter-pinned`: the children take turns, and only "
            "a preemption inside the critical section makes the other wait; mostly "
            "the uncontended path). "
            "**fill**: a fresh forked child takes the array's lock, copies all 1M "
            "f64 (8 MB, faulted in by the parent already: the child still takes a "
            "minor fault per page) from a source the parent built before the fork "
            "(every row copies the same 8 MB) and lets go; the child times that "
            "alone; 15 children. "
            "**shm**: one write of all of a 100 MiB `shm_open` segment (memcpy "
            "from a warm source segment, or memset); each brood row and its C floor "
            "are a pair, and every round the pair gets one fresh segment, faulted "
            "in (untimed) by the harness, which both write in turn (the C floor "
            "through its own mapping of it, every page in before its timed write), "
            "copying from the same source segment; which of the two writes first "
            "alternates from round to round. Both write the same physical pages "
            "from the same physical pages, so a pair's ratio compares the writes; "
            "GB/s = 10^9 bytes written per second; 64 rounds (Python: 10, on "
            "segments of its own). A brood row's share of its C floor (`vs C "
            "floor` and the ratio below) is the median of the 64 pairs' ratios (the "
            "range beside it is each row's own). "
            "**sem**: round trips over two semaphores between the parent and one "
            "child, 20000 after 2000 warm-up; as the scheduler places the two "
            "processes, then both pinned to one CPU (a round trip is then two "
            "context switches and the semaphore calls). As placed, a pair that "
            "shares a CPU takes about 3 µs a round trip and one on two CPUs 10 µs "
            "or more (a wake-up on an idle vCPU), and each pair lands as it may: "
            "compare Python with brood in the pinned pass only. "
            "**create**: 10,000 `Value<i64>`s (Python: `Value('q')`) and 10,000 "
            "`Lock`s made and kept (the making timed; they are dropped after); 7 runs. "
            "C floors: a 3-state futex mutex (Drepper's mutex2, shared futex calls); "
            "a `sem_t` (pshared); a `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED`, "
            "`PTHREAD_MUTEX_ROBUST` and `ERRORCHECK`: the memory of brood's `Lock`, "
            "whose fallback calls these functions; brood's own fast path in C "
            "(its floor: the one lock a thread holds is *parked* in the robust "
            "list's `list_op_pending` slot, so a pair is two CASes and two plain "
            "stores, the kernel still marking a dead owner; `sync/README.md`); "
            "glibc's robust protocol inline in C (`list_op_pending`, one CAS, the "
            "robust-list link and unlink: what brood's fast path did before); and a futex "
            "word holding the owner's TID (the fast path of the design whose waiters "
            "would poll the owner's liveness instead). `vs C floor`: the futex mutex for lock and counter, the same "
            "operation otherwise; as a share of the floor's rate, or a multiple of "
            "its time.",
            sync_table(data),
            sync_ratios(data),
        ),
        (
            "Managers",
            "manager",
            "brood's `Manager` against Python's `multiprocessing` managers, same tests "
            "(`bench/src/manager.rs`, `bench/python/manager.py`). **dict**, **queue**: "
            "from the owner process, 1000 warm-up then 20000 pairs each timed; median "
            "and p10–p90. **workers-N**: the reference's master/worker pattern on "
            "127.0.0.1 with an auth key, N worker processes connected first, 10,000 "
            "integer tasks on a task queue, each worker puts the square on a result "
            "queue; from the first put to the last result; 3 runs, median and "
            "slowest–fastest. brood's processes here are all on the server's host: "
            "a plain managed queue is a shared-memory ring they map and use without "
            "a round trip (the dict goes through the link's rings, one round trip a "
            "call); the `socket` and `TCP only` rows are what a client on another "
            "host gets (every call a round trip to the server).",
            manager_table(data),
            [],
        ),
    ]
    first = True
    for title, only, blurb, table, ratios in sections:
        if not table:
            continue
        if not first:
            print()
        first = False
        print(f"## {title}")
        print()
        print(blurb)
        print()
        print(f"Command: `{args.command}` (this table alone: `bench/run --only {only}`)")
        print()
        print("\n".join(table))
        if ratios:
            print()
            print("\n".join(ratios))


if __name__ == "__main__":
    main()
