"""Python 3.11's multiprocessing queues, case by case: the reference that
crates/brood/tests/queue_python.rs compares brood's queues with.

Prints one line per case: `case<TAB>outcome`, where outcome is
`ok:<value>` or `err:<ExceptionType>:<message>`. Elapsed times are printed
in whole tens of milliseconds (`~Nms`) only where the case is about time.
"""
import multiprocessing as mp
import queue
import sys
import time


def run(name, fn):
    t0 = time.monotonic()
    try:
        v = fn()
        out = "ok:%r" % (v,)
    except Exception as e:  # noqa: BLE001 - the exception is the outcome
        msg = str(e)
        if "<" in msg:
            msg = msg.split("<")[0] + "<..>" + msg.split(">")[-1]
        out = "err:%s:%s" % (type(e).__name__, msg)
    ms = (time.monotonic() - t0) * 1000
    print("%s\t%s\t%.0f" % (name, out, ms), flush=True)


def main():
    ctx = mp.get_context("fork")
    # Timeouts on an empty / full queue.
    q = ctx.Queue(1)
    run("get_nowait_empty", lambda: q.get_nowait())
    run("get_block_false_empty", lambda: q.get(False))
    run("get_block_false_timeout_empty", lambda: q.get(False, 3600))
    run("get_timeout0_empty", lambda: q.get(True, 0))
    run("get_timeout_neg_empty", lambda: q.get(True, -1))
    run("get_block_false_timeout_neg_empty", lambda: q.get(False, -1))
    run("get_timeout_50ms_empty", lambda: q.get(True, 0.05))
    q.put(1)
    time.sleep(0.05)
    run("put_nowait_full", lambda: q.put_nowait(2))
    run("put_block_false_full", lambda: q.put(2, False))
    run("put_timeout0_full", lambda: q.put(2, True, 0))
    run("put_timeout_neg_full", lambda: q.put(2, True, -1))
    run("put_timeout_50ms_full", lambda: q.put(2, True, 0.05))
    run("qsize_full", lambda: q.qsize())
    run("full_full", lambda: q.full())
    run("empty_full", lambda: q.empty())
    # A negative timeout on a queue with room / a message.
    q2 = ctx.Queue()
    run("put_timeout_neg_room", lambda: q2.put(1, True, -1))
    time.sleep(0.05)
    run("get_timeout_neg_ready", lambda: q2.get(True, -1))
    # maxsize <= 0: unbounded.
    for m in (0, -1):
        qm = ctx.Queue(m)
        for i in range(1000):
            qm.put_nowait(i)
        time.sleep(0.1)
        run("maxsize_%d_qsize_after_1000" % m, lambda: qm.qsize())
        run("maxsize_%d_full" % m, lambda: qm.full())
        run("maxsize_%d_fifo" % m, lambda: [qm.get() for _ in range(1000)] == list(range(1000)))
    run("queue_default_full", lambda: ctx.Queue().full())
    run("queue_new_empty", lambda: ctx.Queue().empty())
    run("queue_new_qsize", lambda: ctx.Queue().qsize())
    # Close.
    qc = ctx.Queue()
    qc.put("a")
    time.sleep(0.05)
    qc.close()
    run("put_after_close", lambda: qc.put("b"))
    run("get_after_close", lambda: qc.get(timeout=1))
    run("close_twice", lambda: qc.close())
    qf = ctx.Queue(1)
    qf.put(1)
    time.sleep(0.05)
    qf.close()
    run("put_nowait_full_after_close", lambda: qf.put_nowait(2))
    run("get_nowait_after_close", lambda: qf.get_nowait())
    run("qsize_after_close", lambda: qf.qsize())
    # (not empty() after close: Python 3.11 answers False or raises
    # OSError, depending on a race with its own feeder thread)
    # JoinableQueue.
    j = ctx.JoinableQueue()
    run("join_empty", lambda: j.join())
    run("task_done_none_put", lambda: j.task_done())
    j.put(1)
    run("task_done_without_get", lambda: j.task_done())
    run("join_after_task_done_without_get", lambda: j.join())
    run("qsize_after_task_done_without_get", lambda: (time.sleep(0.05), j.qsize())[1])
    run("get_after_task_done_without_get", lambda: j.get(timeout=1))
    run("task_done_too_many", lambda: j.task_done())
    j.put(1)
    j.put(2)
    j.get()
    j.get()
    j.task_done()
    j.task_done()
    run("join_all_done", lambda: j.join())
    j.put(3)
    j.close()
    run("joinable_task_done_after_close", lambda: j.task_done())
    run("joinable_join_after_close", lambda: j.join())
    jc = ctx.JoinableQueue()
    jc.close()
    run("joinable_put_after_close", lambda: jc.put(1))
    run("joinable_join_after_failed_put", lambda: jc.join())
    # SimpleQueue.
    s = ctx.SimpleQueue()
    run("simple_empty_new", lambda: s.empty())
    s.put("x")
    run("simple_empty_after_put", lambda: s.empty())
    run("simple_get", lambda: s.get())
    s.close()
    run("simple_put_after_close", lambda: s.put(1))
    run("simple_get_after_close", lambda: s.get())
    run("simple_close_twice", lambda: s.close())
    # Round trips.
    r = ctx.Queue()
    for v in ("héllo wörld ✓ 日本", b"\x00\xffbytes", {"a": [1, 2], "b": (3.5, None)}):
        r.put(v)
        run("roundtrip_%s" % type(v).__name__, lambda v=v: r.get(timeout=1) == v)
    big = b"x" * (10 << 20)
    r.put(big)
    run("roundtrip_10mib", lambda: r.get(timeout=5) == big)
    for i in range(10000):
        r.put(i)
    run("many_small_fifo", lambda: [r.get(timeout=5) for _ in range(10000)] == list(range(10000)))


if __name__ == "__main__":
    print("python\t%d.%d" % sys.version_info[:2])
    main()
