"""Times multiprocessing's shared memory and locks: the Python rows of the
"Shared memory and locks" table.

The tests, counts and schedule are the Rust harness's (bench/src/sync.rs);
the Lock test does fewer pairs per run (Python is slower), and every child
is a fork-context Process:

- lock: uncontended Lock().acquire() + release() pairs in one process
  (bound methods hoisted out of the loop); million pairs per second.
- counter: two children each do `with v.get_lock(): v.value += 1` 100k
  times on one Value('q', 0) (whose lock is an RLock; `.value` takes it
  again, reentrantly). The children say they are ready and spin (with
  sched_yield) on a go flag; the time is from the parent raising the flag to
  the later child's last increment (CLOCK_MONOTONIC, read in each child); ms.
  Run twice: as the scheduler places the processes (counter), then all of
  them pinned to the last CPU (counter-pinned).
- fill: a fresh child fills an Array('d', 1_000_000) (already faulted in by
  the parent) and times only that: `arr[:] = list` (the synchronized
  wrapper takes the lock; ctypes converts every float), or under
  `get_lock()` a memoryview copy from an array.array (a memmove). The
  source is built before the fork, untimed; us.
- shm: `shm.buf[:] = src` of a 100 MiB SharedMemory (create=True,
  unlinked at once: the mapping stays, /dev/shm keeps nothing), a fresh one
  per run, faulted in (untimed) before the timed write; src a warm 100 MiB
  bytes; GB/s.
- create: CREATE_N Value('q') and as many Lock() made and kept (the time of
  the making only); ms.
- sem: round trips over two Semaphore(0) between the parent and one child
  (started once); each round trip timed; us. Run twice: as the scheduler
  places the two processes (sem), then both pinned to the last CPU
  (sem-pinned).

Prints the Rust harness's TSV lines, `lo`/`hi` being the minimum and
maximum run (p10 and p90 of the round trips for sem):
sync<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n

Usage: python3 sync.py [--iters N] [--only SUBSTRING]   (--iters sets the
start table's counts and is ignored here)
"""

import argparse
import array
import multiprocessing
import os
import time
from multiprocessing import shared_memory

LOCK_PAIRS, LOCK_RUNS = 1_000_000, 7
COUNTER_N, COUNTER_RUNS = 100_000, 15
FILL_N, FILL_RUNS = 1_000_000, 15
SHM_BYTES, SHM_RUNS = 100 << 20, 10
SEM_WARMUP, SEM_ITERS, SEM_ROUNDS = 2000, 20000, 10
CREATE_N, CREATE_RUNS = 10_000, 7

ctx = multiprocessing.get_context("fork")


def mono_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def percentile(sorted_values, q):
    # Python's round() rounds half to even; the other harnesses round half up.
    return sorted_values[int((len(sorted_values) - 1) * q + 0.5)]


# ----- lock -----


class LockPairs:
    def __init__(self):
        self.lock = ctx.Lock()

    def run(self, n):
        acquire, release = self.lock.acquire, self.lock.release
        t = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        return [n / (time.perf_counter() - t) / 1e6]


# ----- counter -----

READY0, READY1, GO, DONE0, DONE1 = range(5)


def count(flags, idx, value, n):
    flags[READY0 + idx] = 1
    while not flags[GO]:
        os.sched_yield()
    lock = value.get_lock()
    for _ in range(n):
        with lock:
            value.value += 1
    flags[DONE0 + idx] = mono_ns()


class Counter:
    def __init__(self):
        self.value = ctx.Value("q", 0)
        self.flags = ctx.RawArray("q", 5)

    def run(self, n):
        flags = self.flags
        for i in range(5):
            flags[i] = 0
        self.value.value = 0
        kids = [ctx.Process(target=count, args=(flags, i, self.value, n)) for i in range(2)]
        for k in kids:
            k.start()
        while not (flags[READY0] and flags[READY1]):
            os.sched_yield()
        t0 = mono_ns()
        flags[GO] = 1
        for k in kids:
            k.join()
            assert k.exitcode == 0, k.exitcode
        assert self.value.value == 2 * n, self.value.value
        return [(max(flags[DONE0], flags[DONE1]) - t0) / 1e6]


# ----- fill -----


def fill_list(arr, src, out):
    t = time.perf_counter()
    arr[:] = src
    out.value = (time.perf_counter() - t) * 1e6


def fill_memoryview(arr, src, out):
    t = time.perf_counter()
    with arr.get_lock():
        memoryview(arr.get_obj()).cast("B")[:] = memoryview(src).cast("B")
    out.value = (time.perf_counter() - t) * 1e6


class Fill:
    def __init__(self, target):
        self.target = target
        self.arr = None
        self.out = ctx.RawValue("d", 0.0)
        self.runs = 0

    def run(self, n):
        if self.arr is None:
            self.arr = ctx.Array("d", n)
            with self.arr.get_lock():  # fault the pages in
                memoryview(self.arr.get_obj()).cast("B")[:] = bytes(8 * n)
        self.runs += 1
        x = float(self.runs)
        src = [x] * n if self.target is fill_list else array.array("d", [x]) * n
        p = ctx.Process(target=self.target, args=(self.arr, src, self.out))
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
        assert self.arr[n - 1] == x, "the child did not fill the array"
        return [self.out.value]


# ----- shm -----


class Shm:
    """A fresh segment per run, faulted in (untimed) before the timed
    write, as the Rust and C rows do."""

    def __init__(self):
        self.shm = None
        self.src = bytes(i * 31 + 7 & 0xFF for i in range(256)) * (SHM_BYTES // 256)

    def run(self, n):
        self.finish()
        self.shm = shared_memory.SharedMemory(create=True, size=n)
        self.shm.unlink()  # the mapping stays; nothing is left in /dev/shm
        buf, src = self.shm.buf, self.src
        assert n == len(buf) == len(src)
        buf[:] = bytes(n)  # warm: every page in
        t = time.perf_counter()
        buf[:] = src
        secs = time.perf_counter() - t
        del buf
        return [n / secs / 1e9]

    def finish(self):
        if self.shm is not None:
            self.shm.close()
            self.shm = None


# ----- sem -----


def pong(ping, pong_, stop):
    while True:
        ping.acquire()
        if stop.value:
            return
        pong_.release()


class Sem:
    def __init__(self):
        self.ping, self.pong = ctx.Semaphore(0), ctx.Semaphore(0)
        self.stop = ctx.RawValue("i", 0)
        self.proc = ctx.Process(target=pong, args=(self.ping, self.pong, self.stop))
        self.proc.start()

    def run(self, n):
        release, acquire = self.ping.release, self.pong.acquire
        clock = time.perf_counter
        times = []
        for _ in range(n):
            t = clock()
            release()
            acquire()
            times.append((clock() - t) * 1e6)
        return times

    def finish(self):
        self.stop.value = 1
        self.ping.release()
        self.proc.join()
        assert self.proc.exitcode == 0, self.proc.exitcode


# ----- create -----


class Create:
    def run(self, n):
        clock = time.perf_counter
        t = clock()
        values = [ctx.Value("q", i) for i in range(n)]
        locks = [ctx.Lock() for _ in range(n)]
        ms = (clock() - t) * 1e3
        assert values[-1].value == n - 1
        assert locks[-1].acquire(False)
        del values, locks
        return [ms]

    def finish(self):
        pass


# (test, row name, row factory); the test's (warm-up, count per run, runs)
ROWS = [
    ("lock", "python Lock acquire/release", LockPairs),
    ("counter", "python Value('q') with get_lock(): .value += 1", Counter),
    ("fill", "python Array('d') arr[:] = list", lambda: Fill(fill_list)),
    ("fill", "python Array('d') memoryview copy from array.array", lambda: Fill(fill_memoryview)),
    ("shm", "python SharedMemory buf[:] = bytes", Shm),
    ("sem", "python Semaphore", Sem),
    ("create", "python Value('q') + Lock()", Create),
]
SCHEDULE = {
    "lock": (LOCK_PAIRS // 5, LOCK_PAIRS, LOCK_RUNS),
    "counter": (COUNTER_N, COUNTER_N, COUNTER_RUNS),
    "counter-pinned": (COUNTER_N, COUNTER_N, COUNTER_RUNS),
    "fill": (FILL_N, FILL_N, FILL_RUNS),
    "shm": (SHM_BYTES, SHM_BYTES, SHM_RUNS),
    "sem": (SEM_WARMUP, SEM_ITERS // SEM_ROUNDS, SEM_ROUNDS),
    "sem-pinned": (SEM_WARMUP, SEM_ITERS // SEM_ROUNDS, SEM_ROUNDS),
    "create": (CREATE_N, CREATE_N, CREATE_RUNS),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, help="ignored (the start table's count)")
    ap.add_argument(
        "--only", help="run only the rows whose name (or 'sync <test>') contains this"
    )
    args = ap.parse_args()
    all_cpus = os.sched_getaffinity(0)
    last_cpu = (os.cpu_count() or 1) - 1
    for test, (warmup, n, runs) in SCHEDULE.items():
        rows_of = test.removesuffix("-pinned")
        rows = [
            (name, make)
            for t, name, make in ROWS
            if t == rows_of
            and (not args.only or args.only in name or args.only in f"sync {test}")
        ]
        if not rows:
            continue
        if test != rows_of:
            if last_cpu < 1:
                continue
            os.sched_setaffinity(0, {last_cpu})  # the children inherit it
        runners = [make() for _, make in rows]
        for r in runners:
            r.run(warmup)
        samples = [[] for _ in rows]
        for _ in range(runs):
            for r, s in zip(runners, samples):
                s.extend(r.run(n))
        for r in runners:
            if hasattr(r, "finish"):
                r.finish()
        os.sched_setaffinity(0, all_cpus)
        for (name, _), s in zip(rows, samples):
            s.sort()
            lo, hi = (percentile(s, 0.1), percentile(s, 0.9)) if rows_of == "sem" else (s[0], s[-1])
            print(
                f"sync\t{test}\t{name}\t{percentile(s, 0.5):.4f}\t{lo:.4f}\t{hi:.4f}\t{len(s)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
