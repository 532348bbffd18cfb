"""The Python side of the Redis table (issue 15): task queues on Redis.

Against a private redis-server it starts itself (a free loopback port, a
temporary directory, append-only file on with fsync every second, as
brood-redis's LocalServer), for each framework that imports:

- tasks-N (N = 1, 2, 4 worker processes): thousand tasks per second end to
  end for trivial tasks (`square(x)`), from the first enqueue to the last
  result back at the caller, the workers started and warmed first:
  - `celery .delay`: Celery's defaults (prefork pool, `--concurrency N`,
    JSON, prefetch 4, results in the same Redis); `square.delay(i)` for
    every task, then one `ResultSet(...).get()` (Celery's native join on
    Redis: results fetched many at a time); the round trip is
    `square.delay(3).get()`;
  - `celery chunks`: `square.chunks(..., 100)` (100 tasks a message);
  - `rq`: `N` `rq worker` processes (RQ's default worker forks a child per
    job); `queue.enqueue(square, i)`, then waits for the finished registry
    and reads every result; 1,000 tasks (RQ runs a few hundred a second);
  - `dramatiq`: `dramatiq --processes N` with its default 8 threads a
    process (`BENCH_DRAMATIQ_THREADS`; with 1 thread its Redis consumer
    prefetches 2 messages: 0.06 k/s against 0.48 k/s with 8 in one loaded
    try here), results middleware;
    `square.send(i)`, then `get_result(block=True)` on each;
  - `python streams, hand-batched`: redis-py and N `multiprocessing`
    workers on a Redis stream with a consumer group: the caller `XADD`s
    the tasks in pipelines of 500; each worker `XREADGROUP COUNT 500`, then
    one pipeline of result `XADD`s and one `XACK`; the caller `XREAD`s the
    result stream 1000 at a time;
  - `python BaseManager master/worker`: the reference's pattern over TCP
    (no Redis; `bench/python/manager.py`'s `master_worker`);
- latency: one task's round trip with one worker (submit, wait for its
  result), 200 times after 20 warm-up; median and p10–p90, µs;
- ceiling: `redis-benchmark` (SET, 200,000 requests) with 1 client and 50
  clients unpipelined, and 50 clients with `-P 16`: thousand ops/s.

A framework that does not import gives one "not installed" line (install
them with `bench/run`, which makes `bench/.venv-redis`). brood's rows come
from the Rust harness in the same format.

Prints `redis<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n[<TAB>note]`
(tasks-N: k tasks/s, lo/hi the slowest/fastest run; latency: µs, p10/p90;
ceiling: k ops/s). `--report FILE...` prints the Markdown section from
such lines (those of bench/python/redis_objects.py and the Rust
`redis-objects` table too).

Usage: python3 redis_queues.py [--iters N] [--only SUBSTRING] [--report FILE...]
"""

import argparse
import csv
import io
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# BENCH_REDIS_TASKS scales both counts down for a quick try.
TASKS = int(os.environ.get("BENCH_REDIS_TASKS", "10000"))
RQ_TASKS = max(1, TASKS // 10)
RUNS = 1
LAT_WARMUP = 20
LAT_N = 200
WORKERS = (1, 2, 4)
DRAMATIQ_THREADS = os.environ.get("BENCH_DRAMATIQ_THREADS", "8")


# ---------------------------------------------------------------- helpers


def emit(test, name, values, spread_is_percentile, note=""):
    v = sorted(values)
    if spread_is_percentile:
        lo, hi = v[min(len(v) - 1, int(0.1 * len(v)))], v[min(len(v) - 1, int(0.9 * len(v)))]
    else:
        lo, hi = v[0], v[-1]
    tail = f"\t{note}" if note else ""
    print(f"redis\t{test}\t{name}\t{statistics.median(v):.3f}\t{lo:.3f}\t{hi:.3f}\t{len(v)}{tail}",
          flush=True)


def missing(test, name, why):
    print(f"redis\t{test}\t{name}\tnan\tnan\tnan\t0\t{why}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server, as brood-redis's LocalServer."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.01)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def flush(self):
        subprocess.run(["redis-cli", "-p", str(self.port), "FLUSHALL"],
                       stdout=subprocess.DEVNULL, check=False)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_env(url):
    env = dict(os.environ)
    env["BENCH_REDIS_URL"] = url
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    return env


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def spawn(cmd, url):
    return subprocess.Popen(cmd, env=worker_env(url), cwd=HERE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def latency(one):
    for _ in range(LAT_WARMUP):
        one()
    out = []
    for _ in range(LAT_N):
        t = time.perf_counter_ns()
        one()
        out.append((time.perf_counter_ns() - t) / 1e3)
    return out


def rate(n, secs):
    return n / secs / 1e3


def bin_of(name):
    """A console script of this interpreter's environment (the venv's)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.path.exists(path) else shutil.which(name)


# ---------------------------------------------------------------- celery


def bench_celery(server, only):
    names = ("celery .delay", "celery chunks (100 a message)")
    try:
        os.environ["BENCH_REDIS_URL"] = server.url
        sys.path.insert(0, HERE)
        import redis_celery_app as capp  # noqa: E402
        from celery.result import ResultSet
    except ImportError as e:
        for n in names:
            for w in WORKERS:
                missing(f"tasks-{w}", n, f"not installed ({e})")
        return
    celery = [sys.executable, "-m", "celery", "-A", "redis_celery_app", "worker",
              "--pool=prefork", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
              "--without-heartbeat"]
    for w in WORKERS:
        if not any(selected(only, f"redis tasks-{w}", n) for n in names) and not (
                w == 1 and selected(only, "redis latency", names[0])):
            continue
        server.flush()
        procs = [spawn(celery + [f"--concurrency={w}"], server.url)]
        try:
            warm = [capp.square.delay(i) for i in range(4 * w)]
            for r in warm:
                r.get(timeout=120)
            if selected(only, f"redis tasks-{w}", names[0]):
                runs = []
                for _ in range(RUNS):
                    t = time.perf_counter()
                    rs = ResultSet([capp.square.delay(i) for i in range(TASKS)])
                    total = sum(rs.get(timeout=600))
                    runs.append(rate(TASKS, time.perf_counter() - t))
                    assert total == sum(i * i for i in range(TASKS))
                emit(f"tasks-{w}", names[0], runs, False)
            if selected(only, f"redis tasks-{w}", names[1]):
                runs = []
                for _ in range(RUNS):
                    t = time.perf_counter()
                    res = capp.square.chunks(((i,) for i in range(TASKS)), 100).apply_async()
                    total = sum(sum(part) for part in res.get(timeout=600))
                    runs.append(rate(TASKS, time.perf_counter() - t))
                    assert total == sum(i * i for i in range(TASKS))
                emit(f"tasks-{w}", names[1], runs, False)
            if w == 1 and selected(only, "redis latency", names[0]):
                emit("latency", names[0],
                     latency(lambda: capp.square.delay(3).get(timeout=60)), True)
        finally:
            stop(procs)


# ---------------------------------------------------------------- rq


def bench_rq(server, only):
    name = f"rq ({RQ_TASKS:,} tasks)"
    try:
        import redis
        import rq
        from rq.job import Job
    except ImportError as e:
        for w in WORKERS:
            missing(f"tasks-{w}", name, f"not installed ({e})")
        return
    sys.path.insert(0, HERE)
    import redis_rq_tasks

    rq_bin = bin_of("rq")
    conn = redis.Redis.from_url(server.url)
    for w in WORKERS:
        if not selected(only, f"redis tasks-{w}", name) and not (
                w == 1 and selected(only, "redis latency", name)):
            continue
        server.flush()
        q = rq.Queue("bench", connection=conn)
        procs = [spawn([rq_bin, "worker", "-u", server.url, "-q", "bench", "--logging_level",
                        "WARNING"], server.url) for _ in range(w)]
        try:
            def run(n):
                t = time.perf_counter()
                jobs = [q.enqueue(redis_rq_tasks.square, i) for i in range(n)]
                registry = q.finished_job_registry
                deadline = time.monotonic() + 600
                while registry.count < n:
                    if time.monotonic() > deadline:
                        raise RuntimeError("rq: tasks did not finish in 600 s")
                    time.sleep(0.005)
                done = Job.fetch_many([j.id for j in jobs], connection=conn)
                total = sum(j.return_value() for j in done)
                secs = time.perf_counter() - t
                assert total == sum(i * i for i in range(n)), total
                for j in done:
                    registry.remove(j, delete_job=True)
                return rate(n, secs)

            run(4 * w)
            if selected(only, f"redis tasks-{w}", name):
                emit(f"tasks-{w}", name, [run(RQ_TASKS) for _ in range(RUNS)], False)
            if w == 1 and selected(only, "redis latency", name):
                def one():
                    job = q.enqueue(redis_rq_tasks.square, 3)
                    res = job.latest_result(timeout=60)
                    assert res is not None and res.return_value == 9

                emit("latency", name, latency(one), True)
        finally:
            stop(procs)


# ---------------------------------------------------------------- dramatiq


def bench_dramatiq(server, only):
    name = f"dramatiq ({DRAMATIQ_THREADS} threads a process)"
    try:
        os.environ["BENCH_REDIS_URL"] = server.url
        sys.path.insert(0, HERE)
        import redis_dramatiq_app as dapp
    except ImportError as e:
        for w in WORKERS:
            missing(f"tasks-{w}", name, f"not installed ({e})")
        return
    for w in WORKERS:
        if not selected(only, f"redis tasks-{w}", name) and not (
                w == 1 and selected(only, "redis latency", name)):
            continue
        server.flush()
        procs = [spawn([sys.executable, "-m", "dramatiq", "redis_dramatiq_app", "--processes",
                        str(w), "--threads", DRAMATIQ_THREADS], server.url)]
        try:
            def run(n):
                t = time.perf_counter()
                msgs = [dapp.square.send(i) for i in range(n)]
                total = sum(m.get_result(block=True, timeout=600_000) for m in msgs)
                secs = time.perf_counter() - t
                assert total == sum(i * i for i in range(n))
                return rate(n, secs)

            run(4 * w)
            if selected(only, f"redis tasks-{w}", name):
                emit(f"tasks-{w}", name, [run(TASKS) for _ in range(RUNS)], False)
            if w == 1 and selected(only, "redis latency", name):
                emit("latency", name,
                     latency(lambda: dapp.square.send(3).get_result(block=True, timeout=60_000)),
                     True)
        finally:
            stop(procs)


# ---------------------------------------------------------------- streams by hand

BATCH = 500


def stream_worker(url, name):
    import redis

    r = redis.Redis.from_url(url)
    while True:
        got = r.xreadgroup("g", name, {"tasks": ">"}, count=BATCH, block=100)
        if not got:
            if r.exists("stop"):
                return
            continue
        entries = got[0][1]
        pipe = r.pipeline(transaction=False)
        for _id, fields in entries:
            n = int(fields[b"n"])
            pipe.xadd("results", {"n": n, "r": n * n})
        pipe.xack("tasks", "g", *[i for i, _ in entries])
        pipe.execute()


def bench_streams(server, only):
    name = "python streams, hand-batched (redis-py)"
    try:
        import redis
    except ImportError as e:
        for w in WORKERS:
            missing(f"tasks-{w}", name, f"not installed ({e})")
        return
    ctx = multiprocessing.get_context("fork")
    for w in WORKERS:
        if not selected(only, f"redis tasks-{w}", name) and not (
                w == 1 and selected(only, "redis latency", name)):
            continue
        server.flush()
        r = redis.Redis.from_url(server.url)
        r.xgroup_create("tasks", "g", id="0", mkstream=True)
        r.xadd("results", {"n": -1})
        last = [r.xrevrange("results", count=1)[0][0]]
        procs = [ctx.Process(target=stream_worker, args=(server.url, f"w{i}")) for i in range(w)]
        for p in procs:
            p.start()
        try:
            def run(n):
                t = time.perf_counter()
                for start in range(0, n, BATCH):
                    pipe = r.pipeline(transaction=False)
                    for i in range(start, min(n, start + BATCH)):
                        pipe.xadd("tasks", {"n": i})
                    pipe.execute()
                total, seen = 0, 0
                while seen < n:
                    got = r.xread({"results": last[0]}, count=1000, block=10_000)
                    if not got:
                        raise RuntimeError("python streams: results stopped coming")
                    for rid, fields in got[0][1]:
                        total += int(fields[b"r"])
                        seen += 1
                        last[0] = rid
                secs = time.perf_counter() - t
                assert total == sum(i * i for i in range(n))
                return rate(n, secs)

            run(4 * w)
            if selected(only, f"redis tasks-{w}", name):
                emit(f"tasks-{w}", name, [run(TASKS) for _ in range(RUNS)], False)
            if w == 1 and selected(only, "redis latency", name):
                emit("latency", name, latency(lambda: run(1)), True)
        finally:
            r.set("stop", 1)
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()


# ---------------------------------------------------------------- BaseManager


def bench_basemanager(only):
    name = "python BaseManager master/worker (TCP, no Redis)"
    sys.path.insert(0, HERE)
    import manager as mgr

    for w in WORKERS:
        if selected(only, f"redis tasks-{w}", name):
            emit(f"tasks-{w}", name, [mgr.master_worker(w) for _ in range(RUNS)], False)
    if selected(only, "redis latency", name):
        m = mgr.MasterManager(address=("127.0.0.1", 0), authkey=mgr.KEY)
        m.start()
        tasks, results = m.get_task_queue(), m.get_result_queue()
        ready = multiprocessing.Semaphore(0)
        p = multiprocessing.Process(target=mgr.worker, args=(m.address, ready))
        p.start()
        assert ready.acquire(timeout=60)

        def one():
            tasks.put(3)
            assert results.get() == 9

        emit("latency", name, latency(one), True)
        tasks.put(None)
        p.join()
        m.shutdown()


# ---------------------------------------------------------------- ceiling


def bench_ceiling(server, only):
    exe = shutil.which("redis-benchmark")
    rows = [
        ("redis-benchmark SET, 1 client, no pipelining", ["-c", "1", "-P", "1", "-n", "100000"]),
        ("redis-benchmark SET, 50 clients, no pipelining", ["-c", "50", "-P", "1"]),
        ("redis-benchmark SET, 50 clients, -P 16", ["-c", "50", "-P", "16", "-n", "2000000"]),
    ]
    for name, args in rows:
        if not selected(only, "redis ceiling", name):
            continue
        if exe is None:
            missing("ceiling", name, "redis-benchmark not found")
            continue
        cmd = [exe, "-h", "127.0.0.1", "-p", str(server.port), "-t", "set", "-n", "200000",
               "--csv", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rps = [float(row[1]) for row in csv.reader(io.StringIO(out))
               if row and row[0] == "SET"]
        emit("ceiling", name, [x / 1e3 for x in rps], False)


# ---------------------------------------------------------------- report

CEILING_TEST = "ceiling"


def fmt_num(x, unit):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if unit == "us":
        return f"{x / 1e3:.2f} ms" if x >= 1000 else f"{x:.0f} µs"
    if unit == "kps" and x < 1:
        return f"{x * 1e3:.0f}/s"
    return f"{x:,.1f} k/s" if x < 100 else f"{x:,.0f} k/s"


def read(files):
    data = {"redis": {}, "robj": {}}
    for path in files:
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 7 and parts[0] in data:
                    vals = tuple(float(x) for x in parts[3:7])
                    note = parts[7] if len(parts) > 7 else ""
                    data[parts[0]].setdefault(parts[1], {})[parts[2]] = (*vals, note)
    return data


def report(files):
    data = read(files)
    out = []
    tasks = data["redis"]
    if tasks:
        names = []
        for test in [f"tasks-{w}" for w in WORKERS] + ["latency"]:
            for name in tasks.get(test, {}):
                if name not in names:
                    names.append(name)
        out += [
            "## Redis: tasks end to end (issue 15)",
            "",
            "Trivial tasks per second (k: thousand) from the first submit to the last result "
            "back at the caller, with 1, 2 and 4 worker processes on this machine, and one "
            "task's round trip with one worker (median, p10–p90). Every framework on its own "
            "private redis-server (append-only file, fsync every second) on loopback. "
            "Python side: `bench/python/redis_queues.py` (how each framework is driven is in "
            "its docstring); Celery, RQ and Dramatiq from `bench/.venv-redis`. "
            f"10,000 tasks a run ({RQ_TASKS:,} for RQ), {RUNS} run(s) after a warm-up. "
            "Ceiling: `redis-benchmark` SET on the same kind of server.",
            "",
            "| row | 1 worker | 2 workers | 4 workers | round trip |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in names:
            cells = []
            note = ""
            for test in [f"tasks-{w}" for w in WORKERS]:
                row = tasks.get(test, {}).get(name)
                if row is None:
                    cells.append("")
                elif row[3] == 0:
                    cells.append("—")
                    note = row[4]
                else:
                    cells.append(fmt_num(row[0], "kps"))
            lat = tasks.get("latency", {}).get(name)
            cells.append(f"{fmt_num(lat[0], 'us')} ({fmt_num(lat[1], 'us')}–"
                         f"{fmt_num(lat[2], 'us')})" if lat and lat[3] else "")
            label = f"{name} — {note}" if note else name
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        cpu = {t: r for t, r in tasks.items() if t.startswith("cpu-")}
        if cpu:
            out += ["", "Scaling where the workers are the bottleneck (400 tasks of 2 ms "
                    "CPU each, worker nodes of one process; `bench/src/redis_pool.rs`):", "",
                    "| worker nodes | k tasks/s | vs 1 node |", "|---|---:|---:|"]
            one = next(iter(cpu.get("cpu-1", {}).values()), None)
            for t in sorted(cpu, key=lambda t: int(t.split("-")[1])):
                for name, row in cpu[t].items():
                    rel = f"{row[0] / one[0]:.2f}x" if one and one[0] else ""
                    out.append(f"| {t.split('-')[1]} ({name}) | {row[0]:.3f} | {rel} |")
        ceiling = tasks.get(CEILING_TEST, {})
        if ceiling:
            out += ["", "| ceiling (same kind of server) | requests/s |", "|---|---:|"]
            for name, row in ceiling.items():
                val = fmt_num(row[0], "kps") if row[3] else row[4]
                out.append(f"| {name} | {val} |")
        brood = [n for n in names if n.startswith("brood")]
        if brood:
            out += ["", "| ratio (4 workers, tasks/s) | this run |", "|---|---:|"]
            t4 = tasks.get("tasks-4", {})
            best = max((n for n in brood if n in t4 and t4[n][3]), key=lambda n: t4[n][0],
                       default=None)
            if best:
                for other in names:
                    if other in t4 and t4[other][3] and not other.startswith("brood"):
                        out.append(f"| {best} / {other} | {t4[best][0] / t4[other][0]:.1f}x |")
    objs = data["robj"]
    if objs:
        if out:
            out.append("")
        out += [
            "## Redis: shared objects (brood-redis `objects`) vs the managers' proxies",
            "",
            "One operation pair from one process, each pair timed, 500 warm-up then 5,000: "
            "median and p10–p90. brood-redis rows on brood's private redis-server "
            "(`bench/src/redis_objects.rs`); Python rows (`bench/python/redis_objects.py`): "
            "`multiprocessing.Manager()` proxies (one machine) and the same operation with "
            "plain redis-py on its own private redis-server. `vs python Manager` and `vs "
            "python redis-py`: that Python row's time over the row's (above 1: faster).",
            "",
            "| test | row | median | p10–p90 | vs python Manager | vs python redis-py |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for test, rows in objs.items():
            py = next((r for n, r in rows.items() if n.startswith("python Manager")), None)
            rp = next((r for n, r in rows.items() if n.startswith("python redis-py")), None)
            for name, row in rows.items():
                if not row[3]:
                    out.append(f"| {test} | {name} | {row[4]} | | | |")
                    continue
                vs = [f"{o[0] / row[0]:.1f}x" if o and o[3] and o is not row else ""
                      for o in (py, rp)]
                out.append(f"| {test} | {name} | {fmt_num(row[0], 'us')} | "
                           f"{fmt_num(row[1], 'us')}–{fmt_num(row[2], 'us')} | {vs[0]} | "
                           f"{vs[1]} |")
    print("\n".join(out))


def selected(only, table, name):
    return only is None or only in name or only in table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int)
    ap.add_argument("--only")
    ap.add_argument("--report", nargs="+")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return
    only = args.only
    if shutil.which("redis-server") is None:
        missing("ceiling", "redis-server", "not found (apt-get install redis-server)")
        return
    server = RedisServer()
    try:
        bench_ceiling(server, only)
        bench_streams(server, only)
        bench_dramatiq(server, only)
        bench_celery(server, only)
        bench_rq(server, only)
    finally:
        server.close()
    bench_basemanager(only)


if __name__ == "__main__":
    main()
