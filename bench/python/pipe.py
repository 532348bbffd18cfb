"""Times multiprocessing.Pipe() between two processes: the round trip of an
8-byte message, and the throughput of 1 MiB messages, through
send_bytes/recv_bytes and through send/recv (a pickled bytes object).

The schedule and the child's protocol are the Rust harness's
(bench/src/pipes.rs): one child per row (fork context), started once; 2000
warm-up and 20000 timed round trips in 10 interleaved rounds; a 64 MiB
warm-up run, then 4 runs of 512 MiB, one per row in turn. The child acts on
the message's length: 8 bytes, echo it; 1 byte, echo it (the end of a
throughput run); 2 bytes, leave; anything else, drop it.

Prints the same TSV lines as the Rust harness:
rtt<TAB>cpus<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n
bw<TAB>cpus<TAB>name<TAB>GBps<TAB>slowest_run_GBps<TAB>fastest_run_GBps<TAB>runs<TAB>MiB_per_run

Usage: python3 pipe.py [--iters N] [--only SUBSTRING]   (--iters sets the
start table's counts and is ignored here)
"""

import argparse
import multiprocessing
import os
import time

RTT_LEN, ACK_LEN, EXIT_LEN, BIG_LEN = 8, 1, 2, 1 << 20
RTT_WARMUP, RTT_ITERS, ROUNDS = 2000, 20000, 10
BW_MSGS, BW_RUNS, BW_WARMUP_MSGS = 512, 4, 64

# (row name, whether the row uses send/recv rather than send_bytes/recv_bytes)
WORKLOADS = [
    ("python Pipe send_bytes/recv_bytes", False),
    ("python Pipe send/recv (bytes)", True),
]


def percentile(sorted_times, q):
    # Python's round() rounds half to even; the other harnesses round half up.
    return sorted_times[int((len(sorted_times) - 1) * q + 0.5)]


def serve(conn, value):
    recv = conn.recv if value else conn.recv_bytes
    send = conn.send if value else conn.send_bytes
    while True:
        m = recv()
        n = len(m)
        if n == RTT_LEN or n == ACK_LEN:
            send(m)
        elif n == EXIT_LEN:
            return


class Row:
    def __init__(self, name, value):
        self.name = name
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child_conn, value))
        self.proc.start()
        child_conn.close()
        self.send = self.conn.send if value else self.conn.send_bytes
        self.recv = self.conn.recv if value else self.conn.recv_bytes
        self.small = bytes(range(RTT_LEN))
        self.big = bytes(i * 31 + 7 & 0xFF for i in range(256)) * (BIG_LEN // 256)
        self.ack = b"k"

    def round_trips(self, n, times):
        send, recv, small = self.send, self.recv, self.small
        clock = time.perf_counter
        for _ in range(n):
            t = clock()
            send(small)
            got = recv()
            times.append((clock() - t) * 1e6)
            assert len(got) == RTT_LEN

    def stream(self, n):
        send, big = self.send, self.big
        t = time.perf_counter()
        for _ in range(n):
            send(big)
        send(self.ack)
        assert len(self.recv()) == ACK_LEN
        return time.perf_counter() - t

    def finish(self):
        self.send(b"xx")
        self.proc.join()
        assert self.proc.exitcode == 0, self.proc.exitcode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, help="ignored (the start table's count)")
    ap.add_argument("--only", help="run only the rows whose name (or 'pipes') contains this")
    args = ap.parse_args()
    rows = [
        Row(name, value)
        for name, value in WORKLOADS
        if not args.only or args.only in name or args.only in "pipes"
    ]
    for r in rows:
        r.round_trips(RTT_WARMUP, [])
    times = [[] for _ in rows]
    for _ in range(ROUNDS):
        for r, t in zip(rows, times):
            r.round_trips(RTT_ITERS // ROUNDS, t)
    for r in rows:
        r.stream(BW_WARMUP_MSGS)
    secs = [[] for _ in rows]
    for _ in range(BW_RUNS):
        for r, s in zip(rows, secs):
            s.append(r.stream(BW_MSGS))
    for r in rows:
        r.finish()
    run_bytes = BW_MSGS * BIG_LEN
    cpus = len(os.sched_getaffinity(0))  # bench/run pins a second pass to one CPU
    for r, t, s in zip(rows, times, secs):
        t.sort()
        print(
            f"rtt\t{cpus}\t{r.name}\t{percentile(t, 0.5):.2f}\t{percentile(t, 0.1):.2f}\t"
            f"{percentile(t, 0.9):.2f}\t{len(t)}"
        )
        print(
            f"bw\t{cpus}\t{r.name}\t{run_bytes * len(s) / sum(s) / 1e9:.3f}\t"
            f"{run_bytes / max(s) / 1e9:.3f}\t{run_bytes / min(s) / 1e9:.3f}\t"
            f"{len(s)}\t{BW_MSGS}",
            flush=True,
        )


if __name__ == "__main__":
    main()
