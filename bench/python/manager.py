"""Times multiprocessing's managers: the Python rows of the "Managers" table.

The tests and counts are the Rust harness's (bench/src/manager.rs):

- dict: d[i] = i; d[i] on a Manager().dict() from the owner process, each
  pair timed; us.
- queue: q.put(i); q.get() on a Manager().Queue(); us.
- workers-N: the reference's BaseManager master/worker pattern over TCP on
  127.0.0.1 with an authkey: a task queue and a result queue registered on
  the master's manager, N worker processes connected first, 10,000 integer
  tasks, each worker puts the square; from the first put to the 10,000th
  result; thousand tasks per second.

Prints mgr<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n.

Usage: python3 manager.py [--iters N] [--only SUBSTRING]   (--iters ignored)
"""

import argparse
import multiprocessing
import queue
import statistics
import time
from multiprocessing.managers import BaseManager

PAIRS = 20_000
WARMUP = 1_000
TASKS = 10_000
RUNS = 3
KEY = b"bench key"

task_queue = queue.Queue()
result_queue = queue.Queue()


def get_tasks():
    return task_queue


def get_results():
    return result_queue


class MasterManager(BaseManager):
    pass


MasterManager.register("get_task_queue", callable=get_tasks)
MasterManager.register("get_result_queue", callable=get_results)


class WorkerManager(BaseManager):
    pass


WorkerManager.register("get_task_queue")
WorkerManager.register("get_result_queue")


def percentile(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]


def emit(test, name, v, spread_is_percentile):
    v = sorted(v)
    lo, hi = (percentile(v, 0.1), percentile(v, 0.9)) if spread_is_percentile else (v[0], v[-1])
    print(f"mgr\t{test}\t{name}\t{statistics.median(v):.3f}\t{lo:.3f}\t{hi:.3f}\t{len(v)}", flush=True)


def time_pairs(pair):
    for i in range(WARMUP):
        pair(i)
    out = []
    clock = time.perf_counter_ns
    for i in range(PAIRS):
        t = clock()
        pair(i)
        out.append((clock() - t) / 1e3)
    return out


def worker(address, ready):
    m = WorkerManager(address=address, authkey=KEY)
    m.connect()
    tasks, results = m.get_task_queue(), m.get_result_queue()
    ready.release()
    while True:
        n = tasks.get()
        if n is None:
            return
        results.put(n * n)


def master_worker(workers):
    m = MasterManager(address=("127.0.0.1", 0), authkey=KEY)
    m.start()
    tasks, results = m.get_task_queue(), m.get_result_queue()
    ready = multiprocessing.Semaphore(0)
    procs = [multiprocessing.Process(target=worker, args=(m.address, ready)) for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in range(workers):
        assert ready.acquire(timeout=60)
    t = time.perf_counter()
    for n in range(TASKS):
        tasks.put(n)
    total = 0
    for _ in range(TASKS):
        total += results.get()
    secs = time.perf_counter() - t
    assert total == sum(n * n for n in range(TASKS))
    for _ in range(workers):
        tasks.put(None)
    for p in procs:
        p.join()
    m.shutdown()
    return TASKS / secs / 1e3


def selected(only, table, name):
    return only is None or only in name or only in table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int)
    ap.add_argument("--only")
    args = ap.parse_args()
    only = args.only
    with multiprocessing.Manager() as m:
        name = "python Manager().dict() d[i] = i; d[i]"
        if selected(only, "manager dict", name):
            d = m.dict()

            def pair(i):
                d[i] = i
                assert d[i] == i

            emit("dict", name, time_pairs(pair), True)
        name = "python Manager().Queue() put + get"
        if selected(only, "manager queue", name):
            q = m.Queue()

            def pair(i):
                q.put(i)
                assert q.get() == i

            emit("queue", name, time_pairs(pair), True)
    for workers in (1, 2, 4):
        test = f"workers-{workers}"
        name = "python BaseManager master/worker over TCP"
        if selected(only, f"manager {test}", name):
            emit(test, name, [master_worker(workers) for _ in range(RUNS)], False)


if __name__ == "__main__":
    main()
