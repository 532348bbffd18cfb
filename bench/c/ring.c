/*
 * The C floor of the queue table: a single-producer single-consumer ring
 * of variable-size records in shared memory (MAP_SHARED | MAP_ANONYMOUS,
 * inherited by a forked child), spinning briefly and then sleeping on a
 * shared futex — what brood's Queue does, minus its locks, its
 * serialization and its crash safety.
 *
 * Records: an 8-byte header (the payload's length; UINT32_MAX = wrap to the
 * start), the payload, padding to 8. `head` and `tail` are byte positions
 * (monotonic, mod CAP), each written by one side only, published with
 * release stores. A side with nothing to do spins SPIN_NS (only when more
 * than one CPU is available), then sleeps on the other side's event word
 * (a waiter count and a bumped word: no lost wake-up).
 *
 * Tests (each run RUNS times, the median printed):
 *   1to1-8B    N 8-byte messages from a child to the parent; M messages/s
 *   1to1-1MiB  N 1 MiB messages (copied in from a warm buffer and out into
 *              another); GB/s (10^9 payload bytes per second)
 *   rtt        N round trips of an 8-byte message over two rings; the
 *              median round trip in microseconds
 *
 * Prints the queue table's TSV lines (see bench/src/queue.rs):
 *   queue<TAB>test<TAB>name<TAB>value<TAB>n
 *
 * Usage: ring [--only SUBSTRING] (other arguments are ignored). Built by
 * bench/run with cc -O2.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP (4u << 20)
#define SPIN_NS 30000
#define RUNS 5
#define NAME "C SPSC ring (spin, then futex)"

struct ring {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) _Atomic uint32_t put_event;  /* bumped when tail moves and someone sleeps */
    _Atomic uint32_t get_sleepers;
    _Alignas(64) _Atomic uint32_t get_event;  /* bumped when head moves and someone sleeps */
    _Atomic uint32_t put_sleepers;
    _Alignas(4096) unsigned char data[CAP];
};

static int multi_cpu;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *w, uint32_t v) {
    struct timespec t = {0, 50 * 1000 * 1000};
    syscall(SYS_futex, w, FUTEX_WAIT, v, &t, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w) {
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Waits until *pos differs from `seen` (spin, then sleep on `ev`). */
static uint64_t wait_move(_Atomic uint64_t *pos, uint64_t seen, _Atomic uint32_t *ev,
                          _Atomic uint32_t *sleepers) {
    uint64_t p;
    if (multi_cpu) {
        uint64_t start = now_ns();
        for (unsigned i = 0;; i++) {
            p = atomic_load_explicit(pos, memory_order_acquire);
            if (p != seen) return p;
            __builtin_ia32_pause();
            if ((i & 63) == 63 && now_ns() - start > SPIN_NS) break;
        }
    }
    for (;;) {
        uint32_t e = atomic_load(ev);
        atomic_fetch_add(sleepers, 1);
        p = atomic_load(pos);
        if (p == seen) futex_wait(ev, e);
        atomic_fetch_sub(sleepers, 1);
        p = atomic_load_explicit(pos, memory_order_acquire);
        if (p != seen) return p;
    }
}

static void publish(_Atomic uint64_t *pos, uint64_t v, _Atomic uint32_t *ev,
                    _Atomic uint32_t *sleepers) {
    atomic_store(pos, v);
    if (atomic_load(sleepers)) {
        atomic_fetch_add(ev, 1);
        futex_wake(ev);
    }
}

static void put(struct ring *r, const void *msg, uint32_t len) {
    uint64_t need = (8 + (uint64_t)len + 7) & ~7ull;
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t off = tail % CAP, to_end = CAP - off;
    uint64_t total = need <= to_end ? need : to_end + need;
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    while (tail + total - head > CAP) head = wait_move(&r->head, head, &r->get_event, &r->put_sleepers);
    if (need > to_end) {
        *(uint64_t *)(r->data + off) = UINT32_MAX;
        tail += to_end;
        off = 0;
    }
    memcpy(r->data + off + 8, msg, len);
    *(uint64_t *)(r->data + off) = len;
    publish(&r->tail, tail + need, &r->put_event, &r->get_sleepers);
}

static uint32_t get(struct ring *r, void *out) {
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (tail == head) tail = wait_move(&r->tail, head, &r->put_event, &r->get_sleepers);
        uint64_t off = head % CAP;
        uint64_t len = *(uint64_t *)(r->data + off);
        if (len == UINT32_MAX) {
            head += CAP - off;
            atomic_store_explicit(&r->head, head, memory_order_release);
            continue;
        }
        memcpy(out, r->data + off + 8, len);
        publish(&r->head, head + ((8 + len + 7) & ~7ull), &r->get_event, &r->put_sleepers);
        return (uint32_t)len;
    }
}

static struct ring *new_ring(void) {
    struct ring *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) { perror("mmap"); exit(1); }
    memset(r->data, 0, CAP); /* fault in */
    return r;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* One throughput run: a child puts n messages of len bytes; seconds. */
static double stream(long n, uint32_t len) {
    struct ring *r = new_ring();
    unsigned char *src = malloc(len), *dst = malloc(len);
    memset(src, 7, len);
    memset(dst, 0, len);
    _Atomic uint32_t *go = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid = fork();
    if (pid == 0) {
        while (!atomic_load(go)) sched_yield();
        for (long i = 0; i < n; i++) {
            if (len >= 8) memcpy(src, &i, 8);
            put(r, src, len);
        }
        _exit(0);
    }
    usleep(1000);
    uint64_t t = now_ns();
    atomic_store(go, 1);
    for (long i = 0; i < n; i++) {
        if (get(r, dst) != len) { fprintf(stderr, "bad length\n"); exit(1); }
    }
    double secs = (now_ns() - t) / 1e9;
    waitpid(pid, NULL, 0);
    munmap(r, sizeof *r);
    munmap((void *)go, 4096);
    free(src);
    free(dst);
    return secs;
}

/* n round trips; fills `us` with per-batch round-trip times. */
static void rtt(long n, double *us, int *count) {
    struct ring *a = new_ring(), *b = new_ring();
    pid_t pid = fork();
    uint64_t m = 0;
    if (pid == 0) {
        for (;;) {
            get(a, &m);
            put(b, &m, 8);
            if (m == UINT64_MAX) _exit(0);
        }
    }
    const long batch = 1000;
    *count = 0;
    for (long done = 0; done < n; done += batch) {
        uint64_t t = now_ns();
        for (long i = 0; i < batch; i++) {
            m = (uint64_t)i;
            put(a, &m, 8);
            get(b, &m);
        }
        us[(*count)++] = (now_ns() - t) / 1e3 / batch;
    }
    m = UINT64_MAX;
    put(a, &m, 8);
    get(b, &m);
    waitpid(pid, NULL, 0);
    munmap(a, sizeof *a);
    munmap(b, sizeof *b);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--only")) only = argv[i + 1];
    cpu_set_t set;
    multi_cpu = sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1;
    double v[RUNS];
    if (!only || strstr("1to1-8B " NAME, only)) {
        long n = 5000000;
        stream(n / 10, 8);
        for (int i = 0; i < RUNS; i++) v[i] = n / stream(n, 8) / 1e6;
        printf("queue\t1to1-8B\t%s\t%.3f\t%ld\n", NAME, median(v, RUNS), n);
    }
    if (!only || strstr("1to1-1MiB " NAME, only)) {
        long n = 4000;
        stream(n / 10, 1 << 20);
        for (int i = 0; i < RUNS; i++) v[i] = n * (double)(1 << 20) / stream(n, 1 << 20) / 1e9;
        printf("queue\t1to1-1MiB\t%s\t%.3f\t%ld\n", NAME, median(v, RUNS), n);
    }
    if (!only || strstr("rtt " NAME, only)) {
        static double us[1000];
        int count;
        rtt(100000, us, &count);
        printf("queue\trtt\t%s\t%.3f\t%d\n", NAME, median(us, count), count * 1000);
    }
    fflush(stdout);
    return 0;
}
