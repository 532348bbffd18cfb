"""Times a Python multi-process event engine, built as brood's EventEngine
is (two worker processes, one multiprocessing.Queue each, events routed by
kind, handlers looked up by kind in the worker), the Python row of the
"Events" table; with --report, the table itself.

The reference links an article on such an engine (多进程异步事件驱动引擎)
but its code is cut off there; this is the usual shape of one.

Prints: events<TAB>throughput<TAB>name<TAB>kev_per_s<TAB>n

Usage: python3 events.py [--iters N] [--only SUBSTRING]   (--iters is ignored)
       python3 events.py --report FILE...
"""

import argparse
import fileinput
import multiprocessing
import statistics
import time

ctx = multiprocessing.get_context("fork")
N = 50_000
RUNS = 3
WORKERS = 2


def noop(event):
    pass


class EventEngine:
    def __init__(self, workers):
        self.queues = [ctx.Queue() for _ in range(workers)]
        self.handlers = {}
        self.workers = []

    def register(self, kind, handler):
        self.handlers.setdefault(kind, []).append(handler)

    def _run(self, q):
        while True:
            event = q.get()
            if event is None:
                return
            for h in self.handlers.get(event[0], ()):
                h(event)

    def start(self):
        for q in self.queues:
            p = ctx.Process(target=self._run, args=(q,))
            p.start()
            self.workers.append(p)

    def put(self, kind, payload):
        self.queues[hash(kind) % len(self.queues)].put((kind, payload))

    def stop(self):  # drain: a sentinel behind the events
        for q in self.queues:
            q.put(None)
        for p in self.workers:
            p.join()


def one_run():
    engine = EventEngine(WORKERS)
    kinds = ["tick", "trade", "quote"]
    for k in kinds:
        engine.register(k, noop)
    engine.start()
    time.sleep(0.05)
    t = time.perf_counter()
    for i in range(N):
        engine.put(kinds[i % 3], i)
    engine.stop()
    return N / (time.perf_counter() - t) / 1e3


def measure(only):
    name = "Python engine (2 workers, Queue each)"
    if only and only not in name and only not in "events":
        return
    v = [one_run() for _ in range(RUNS)]
    print(f"events\tthroughput\t{name}\t{statistics.median(v):.1f}\t{RUNS}", flush=True)


def report(files):
    rows = {}
    for line in fileinput.input(files):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 5 and parts[0] == "events":
            rows[parts[2]] = float(parts[3])
    if not rows:
        return
    print("## Events\n")
    print("brood's `EventEngine` (2 workers) against a Python engine built the same way "
          "(`bench/python/events.py`): events of 3 kinds with a handler that does nothing, "
          "put then drained; thousands of events per second from the first put to the "
          "last worker's exit. Medians of 3 runs, one after the other in one `bench/run`.\n")
    print("| row | k events/s |")
    print("|---|---:|")
    for name, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {v:.1f} |")
    brood = rows.get("brood EventEngine")
    py = [v for k, v in rows.items() if k.startswith("Python")]
    if brood and py:
        r = brood / py[0]
        print(f"\nbrood / Python: {r:.1f}x (target >= 20x: {'met' if r >= 20 else '**not met**'})")
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
