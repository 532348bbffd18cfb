"""The Python rows of the Redis shared-objects table (bench/src/redis_objects.rs
has the brood rows; same tests and counts):

- queue: put + get. `python Manager().Queue()`; `python redis-py RPUSH +
  BLPOP (pickle)`, the same on a Redis list by hand.
- dict: insert + get. `python Manager().dict()`; `python redis-py HSET +
  HGET (pickle)`.
- lock: acquire + release. `python Manager().Lock()`; `python redis-py
  Lock` (redis-py's own lease lock: SET NX PX, a Lua release).
- value: an atomic += 1. `python Manager().Value + Manager().Lock()`
  (`with lock: v.value += 1`); `python redis-py WATCH/MULTI += 1
  (pickle)` (`r.transaction`).

500 warm-up pairs, then 5000 each timed: median, p10, p90, µs. The redis-py
rows run on a private redis-server (bench/python/redis_queues.py's).

Prints `robj<TAB>test<TAB>name<TAB>median<TAB>p10<TAB>p90<TAB>n[<TAB>note]`.

Usage: python3 redis_objects.py [--iters N] [--only SUBSTRING]
"""

import argparse
import multiprocessing
import os
import pickle
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_queues import RedisServer, selected  # noqa: E402

PAIRS = 5_000
WARMUP = 500


def emit(test, name, v):
    v = sorted(v)
    p = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    print(f"robj\t{test}\t{name}\t{statistics.median(v):.3f}\t{p(0.1):.3f}\t{p(0.9):.3f}\t{len(v)}",
          flush=True)


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


def manager_rows(only):
    with multiprocessing.Manager() as m:
        name = "python Manager().Queue() put + get"
        if selected(only, "redis-objects queue", name):
            q = m.Queue()

            def pair(i):
                q.put(i)
                assert q.get() == i

            emit("queue", name, time_pairs(pair))
        name = "python Manager().dict() d[i] = i; d[i]"
        if selected(only, "redis-objects dict", name):
            d = m.dict()

            def pair(i):
                d[i] = i
                assert d[i] == i

            emit("dict", name, time_pairs(pair))
        name = "python Manager().Lock() acquire + release"
        if selected(only, "redis-objects lock", name):
            lock = m.Lock()

            def pair(_):
                lock.acquire()
                lock.release()

            emit("lock", name, time_pairs(pair))
        name = "python Manager().Value + Manager().Lock(), += 1 under the lock"
        if selected(only, "redis-objects value", name):
            v, lock = m.Value("q", 0), m.Lock()

            def pair(_):
                with lock:
                    v.value += 1

            emit("value", name, time_pairs(pair))
            assert v.value == WARMUP + PAIRS


def redis_rows(only):
    try:
        import redis
    except ImportError as e:
        for test in ("queue", "dict", "lock", "value"):
            print(f"robj\t{test}\tpython redis-py\tnan\tnan\tnan\t0\tnot installed ({e})")
        return
    server = RedisServer()
    try:
        r = redis.Redis.from_url(server.url)
        name = "python redis-py RPUSH + BLPOP (pickle)"
        if selected(only, "redis-objects queue", name):
            def pair(i):
                r.rpush("q", pickle.dumps(i))
                assert pickle.loads(r.blpop(["q"], timeout=5)[1]) == i

            emit("queue", name, time_pairs(pair))
        name = "python redis-py HSET + HGET (pickle)"
        if selected(only, "redis-objects dict", name):
            def pair(i):
                k = pickle.dumps(i)
                r.hset("d", k, pickle.dumps(i))
                assert pickle.loads(r.hget("d", k)) == i

            emit("dict", name, time_pairs(pair))
        name = "python redis-py Lock acquire + release (SET NX PX, Lua release)"
        if selected(only, "redis-objects lock", name):
            lock = r.lock("l", timeout=10)

            def pair(_):
                assert lock.acquire()
                lock.release()

            emit("lock", name, time_pairs(pair))
        name = "python redis-py WATCH/MULTI += 1 (pickle)"
        if selected(only, "redis-objects value", name):
            r.set("v", pickle.dumps(0))

            def incr(pipe):
                n = pickle.loads(pipe.get("v"))
                pipe.multi()
                pipe.set("v", pickle.dumps(n + 1))

            def pair(_):
                r.transaction(incr, "v")

            emit("value", name, time_pairs(pair))
            assert pickle.loads(r.get("v")) == WARMUP + PAIRS
    finally:
        server.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int)
    ap.add_argument("--only")
    args = ap.parse_args()
    manager_rows(args.only)
    redis_rows(args.only)


if __name__ == "__main__":
    main()
