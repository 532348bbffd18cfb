/*
 * The C floors of the "Shared memory and locks" table: what the kernel and
 * glibc charge, with no library in between.
 *
 * - lock: uncontended acquire+release pairs, one process, in a tight loop:
 *     futex   a 3-state futex mutex (Drepper's "mutex2": 0 free, 1 held,
 *             2 held with waiters; shared futex calls, no PRIVATE flag)
 *     sem     a sem_t (pshared = 1) as a lock: sem_wait / sem_post
 *     robust  a pthread_mutex_t, PTHREAD_PROCESS_SHARED + ROBUST + ERRORCHECK
 *             (the memory of brood's Lock; its fallback calls these functions)
 *     robustlist  the same mutex, with brood's fast path inline (brood's
 *             floor): the one lock a thread holds is parked in its robust
 *             list head's list_op_pending (from get_robust_list), not linked
 *             onto the list: lock = pending := &link, one CAS of the word
 *             0 -> TID; unlock = one CAS TID -> 0 (else set 0 and wake),
 *             pending := 0 (crates/brood/src/sync/README.md)
 *     glibc   the same mutex, with glibc's robust protocol inline (what
 *             brood's fast path did before parking, and what glibc does
 *             for every lock): list_op_pending, one CAS of the word 0 ->
 *             TID, link onto the thread's robust list; unlink, one CAS
 *             TID -> 0
 *     tid     a futex word holding the owner's TID (CAS 0 -> TID, CAS TID ->
 *             0, else set 0 and wake): the fast path of the alternative
 *             design, whose waiters would poll the owner's liveness
 *   answer: million pairs per second.
 * - counter: two forked children each add 1 to a shared int64 n times, each
 *   increment under the lock (futex or robust, as above). The children say
 *   they are ready and spin (with sched_yield) on a go flag; the time is
 *   from the parent raising the flag to the later child's last increment
 *   (CLOCK_MONOTONIC, read in each child). answer: milliseconds. Run
 *   twice, as the sem test below.
 * - fill: a forked child takes the futex mutex, copies n doubles (1M: 8 MB)
 *   from a source the parent built before the fork into a shared array
 *   (already faulted in by the parent), releases it;
 *   the child times that (lock, fill, unlock) and nothing else. A fresh
 *   child per run. answer: microseconds.
 * - shm memcpy|memset: one write of the whole of a 100 MiB POSIX shared
 *   memory segment (shm_open + ftruncate + mmap; the name is unlinked right
 *   after mmap, so nothing is left in /dev/shm), a fresh one per call,
 *   written once (untimed: every page faulted in) before the timed write:
 *   memcpy from a warm private buffer, or memset. answer: GB/s (10^9 bytes
 *   written per second).
 * - sem: round trips between the parent and one child (started once) over
 *   two pshared sem_t: the parent posts the first and waits on the second,
 *   the child waits on the first and posts the second. answer: each round
 *   trip's microseconds. The test runs twice: as the scheduler places the
 *   two processes, and with both pinned to the last CPU (they take turns:
 *   a round trip is the software path alone, two context switches and the
 *   semaphore calls).
 *
 * Two modes:
 * - `--driven`: the Rust harness (bench/src/sync.rs) runs this program as
 *   rows of its table, interleaved with its own. Commands on stdin, one per
 *   line, one answer line each: `lock futex|sem|robust|robustlist|glibc|tid N`, `counter
 *   futex|robust N`, `fill N`, `shm memcpy|memset BYTES`, `shmat memcpy DEST SRC BYTES`,
 *   `shmat memset DEST BYTE BYTES` (the pair's shared segments: see
 *   shm_write_at), `sem N`, `pin CPU`
 *   (pins this process, and so the children it forks from then on, to CPU;
 *   -1 unpins; answer `ok`), `exit`.
 * - standalone (no argument): runs the harness's schedule for the C rows
 *   alone and prints its TSV lines (see bench/README.md):
 *     sync<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n
 *
 * Built by bench/run with `cc -O2 -pthread` into bench/target/sync.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Anonymous shared memory, inherited by forked children. */
static void *shared(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

/* ----- a 3-state futex mutex (Drepper, "Futexes Are Tricky", mutex2) ----- */

typedef struct {
    _Atomic uint32_t word; /* 0 free, 1 held, 2 held and maybe waiters */
} futex_mutex;

static void futex_wait(_Atomic uint32_t *w, uint32_t expected) {
    syscall(SYS_futex, w, FUTEX_WAIT, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w, int n) {
    syscall(SYS_futex, w, FUTEX_WAKE, n, NULL, NULL, 0);
}

static inline void fm_lock(futex_mutex *m) {
    uint32_t c = 0;
    if (atomic_compare_exchange_strong_explicit(&m->word, &c, 1, memory_order_acquire,
                                                memory_order_relaxed))
        return;
    if (c != 2) c = atomic_exchange_explicit(&m->word, 2, memory_order_acquire);
    while (c != 0) {
        futex_wait(&m->word, 2);
        c = atomic_exchange_explicit(&m->word, 2, memory_order_acquire);
    }
}

static inline void fm_unlock(futex_mutex *m) {
    if (atomic_fetch_sub_explicit(&m->word, 1, memory_order_release) != 1) {
        atomic_store_explicit(&m->word, 0, memory_order_release);
        futex_wake(&m->word, 1);
    }
}

/* ----- glibc's robust protocol inline (brood's fast path, in C) ----- */

#define FUTEX_WAITERS_BIT 0x80000000u
#define FUTEX_TID_MASK_ 0x3fffffffu
#define CF __asm__ volatile("" ::: "memory")

/* The calling thread's robust list head (glibc's), checked for the layout
 * brood's fast path assumes (64-bit glibc: __lock at 0, __list.__next at 32). */
static volatile uintptr_t *rl_head;
static uint32_t rl_tid;
static __thread volatile uintptr_t *rl_thead;
static __thread uint32_t rl_ttid;

static void rl_setup(void) {
    uintptr_t head = 0;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, 0, &head, &len) != 0 || !head || len != 3 * sizeof(void *) ||
        ((intptr_t *)head)[1] != -32) {
        fprintf(stderr, "sync: glibc's robust list is not laid out as brood's fast path expects\n");
        exit(1);
    }
    rl_head = (volatile uintptr_t *)head;
    rl_tid = (uint32_t)syscall(SYS_gettid);
    rl_thead = rl_head;
    rl_ttid = rl_tid;
}

#define RL_WORD(m) ((_Atomic uint32_t *)(void *)(m))
#define RL_LINK(m) ((uintptr_t)(m) + 32)
#define AT(addr) (*(volatile uintptr_t *)(addr))

static inline void gl_lock(pthread_mutex_t *m) {
    uintptr_t e = RL_LINK(m);
    rl_head[2] = e; /* list_op_pending */
    CF;
    uint32_t z = 0;
    if (!atomic_compare_exchange_strong_explicit(RL_WORD(m), &z, rl_tid, memory_order_acquire,
                                                 memory_order_relaxed)) {
        /* uncontended rows only */
        fprintf(stderr, "sync: robustlist lock is busy\n");
        exit(1);
    }
    CF;
    uintptr_t first = rl_head[0];
    AT((first & ~1ul) - 8) = e;
    AT(e) = first;
    AT(e - 8) = (uintptr_t)rl_head;
    CF;
    rl_head[0] = e;
    CF;
    rl_head[2] = 0;
}

static inline void gl_unlock(pthread_mutex_t *m) {
    uintptr_t e = RL_LINK(m);
    if ((atomic_load_explicit(RL_WORD(m), memory_order_relaxed) & FUTEX_TID_MASK_) != rl_tid) {
        fprintf(stderr, "sync: robustlist unlock by a non-owner\n");
        exit(1);
    }
    rl_head[2] = e;
    CF;
    uintptr_t next = AT(e), prev = AT(e - 8);
    AT((next & ~1ul) - 8) = prev;
    AT(prev & ~1ul) = next;
    CF;
    uint32_t t = rl_tid;
    if (!atomic_compare_exchange_strong_explicit(RL_WORD(m), &t, 0, memory_order_release,
                                                 memory_order_relaxed) &&
        (atomic_exchange_explicit(RL_WORD(m), 0, memory_order_release) & FUTEX_WAITERS_BIT))
        syscall(SYS_futex, RL_WORD(m), FUTEX_WAKE, 1, NULL, NULL, 0);
    CF;
    rl_head[2] = 0;
}

/* ----- brood's fast path: the held lock parked in list_op_pending ----- */

/* The lock a thread holds alone is not linked onto its robust list: it stays
 * "parked" in list_op_pending, which the kernel handles at the thread's death
 * as it does the list (sync/README.md). A second lock links the parked one
 * first (rl_unpark); the rows here take one lock at a time. The head and the
 * TID are per thread, as brood's are (a thread local). */

static inline void rl_enqueue(volatile uintptr_t *head, uintptr_t e) {
    uintptr_t first = head[0];
    AT((first & ~1ul) - 8) = e;
    AT(e) = first;
    AT(e - 8) = (uintptr_t)head;
    CF;
    head[0] = e;
}

static __attribute__((noinline)) void rl_unpark(volatile uintptr_t *head) {
    CF;
    rl_enqueue(head, head[2]);
    CF;
}

static inline void rl_lock(pthread_mutex_t *m) {
    volatile uintptr_t *head = rl_thead;
    uintptr_t e = RL_LINK(m);
    if (head[2]) rl_unpark(head); /* another lock is parked */
    head[2] = e;                  /* list_op_pending: park this one */
    CF;
    uint32_t z = 0;
    if (!atomic_compare_exchange_strong_explicit(RL_WORD(m), &z, rl_ttid, memory_order_acquire,
                                                 memory_order_relaxed)) {
        /* uncontended rows only */
        fprintf(stderr, "sync: robustlist lock is busy\n");
        exit(1);
    }
}

static inline void rl_unlock(pthread_mutex_t *m) {
    volatile uintptr_t *head = rl_thead;
    uintptr_t e = RL_LINK(m);
    if (head[2] != e) {
        /* brood: a linked lock (glibc's unlock protocol) or not ours */
        fprintf(stderr, "sync: robustlist unlock of a lock not parked\n");
        exit(1);
    }
    uint32_t t = rl_ttid;
    if (!atomic_compare_exchange_strong_explicit(RL_WORD(m), &t, 0, memory_order_release,
                                                 memory_order_relaxed) &&
        (atomic_exchange_explicit(RL_WORD(m), 0, memory_order_release) & FUTEX_WAITERS_BIT))
        syscall(SYS_futex, RL_WORD(m), FUTEX_WAKE, 1, NULL, NULL, 0);
    CF;
    head[2] = 0;
}

/* ----- a futex word holding the owner's TID ----- */

static inline void tid_lock(_Atomic uint32_t *w) {
    uint32_t z = 0;
    if (!atomic_compare_exchange_strong_explicit(w, &z, rl_tid, memory_order_acquire,
                                                 memory_order_relaxed)) {
        fprintf(stderr, "sync: tid lock is busy\n");
        exit(1);
    }
}

static inline void tid_unlock(_Atomic uint32_t *w) {
    uint32_t t = rl_tid;
    if (!atomic_compare_exchange_strong_explicit(w, &t, 0, memory_order_release,
                                                 memory_order_relaxed) &&
        (atomic_exchange_explicit(w, 0, memory_order_release) & FUTEX_WAITERS_BIT))
        futex_wake(w, 1);
}

static void robust_init(pthread_mutex_t *m) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (pthread_mutex_init(m, &a) != 0) die("pthread_mutex_init");
    pthread_mutexattr_destroy(&a);
}

static void robust_lock(pthread_mutex_t *m) {
    int rc = pthread_mutex_lock(m);
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(m);
    } else if (rc != 0) {
        errno = rc;
        die("pthread_mutex_lock");
    }
}

/* ----- the shared state, set up once ----- */

struct state {
    futex_mutex fm;
    char pad0[60];
    sem_t sem;
    char pad1[64];
    pthread_mutex_t robust;
    char pad2[64];
    pthread_mutex_t robustlist;
    char pad2b[64];
    pthread_mutex_t glibclist;
    char pad2d[64];
    _Atomic uint32_t tidword;
    char pad2c[60];
    int64_t counter;
    char pad3[56];
    /* counter runs: readiness, go, done times */
    _Atomic int32_t ready;
    _Atomic int32_t go;
    _Atomic int64_t done_ns[2];
    /* fill runs: the child's time */
    double fill_us;
    /* ping-pong */
    sem_t ping, pong;
    _Atomic int32_t stop;
};

static struct state *st;

/* ----- lock ----- */

static double lock_pairs(const char *kind, long n) {
    double t;
    if (strcmp(kind, "futex") == 0) {
        futex_mutex *m = &st->fm;
        t = now();
        for (long i = 0; i < n; i++) {
            fm_lock(m);
            fm_unlock(m);
        }
    } else if (strcmp(kind, "sem") == 0) {
        sem_t *s = &st->sem;
        t = now();
        for (long i = 0; i < n; i++) {
            sem_wait(s);
            sem_post(s);
        }
    } else if (strcmp(kind, "robust") == 0) {
        pthread_mutex_t *m = &st->robust;
        t = now();
        for (long i = 0; i < n; i++) {
            robust_lock(m);
            pthread_mutex_unlock(m);
        }
    } else if (strcmp(kind, "robustlist") == 0) {
        pthread_mutex_t *m = &st->robustlist;
        t = now();
        for (long i = 0; i < n; i++) {
            rl_lock(m);
            rl_unlock(m);
        }
    } else if (strcmp(kind, "glibc") == 0) {
        pthread_mutex_t *m = &st->glibclist;
        t = now();
        for (long i = 0; i < n; i++) {
            gl_lock(m);
            gl_unlock(m);
        }
    } else if (strcmp(kind, "tid") == 0) {
        _Atomic uint32_t *w = &st->tidword;
        t = now();
        for (long i = 0; i < n; i++) {
            tid_lock(w);
            tid_unlock(w);
        }
    } else {
        fprintf(stderr, "sync: unknown lock %s\n", kind);
        exit(2);
    }
    return (double)n / (now() - t) / 1e6;
}

/* ----- counter ----- */

static void counter_child(int idx, int robust, long n) {
    atomic_fetch_add(&st->ready, 1);
    while (!atomic_load_explicit(&st->go, memory_order_acquire)) sched_yield();
    if (robust) {
        for (long i = 0; i < n; i++) {
            robust_lock(&st->robust);
            st->counter++;
            pthread_mutex_unlock(&st->robust);
        }
    } else {
        for (long i = 0; i < n; i++) {
            fm_lock(&st->fm);
            st->counter++;
            fm_unlock(&st->fm);
        }
    }
    atomic_store(&st->done_ns[idx], now_ns());
}

static void reap(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid || status != 0) {
        fprintf(stderr, "sync: child %d failed (status %#x)\n", (int)pid, status);
        exit(1);
    }
}

static double counter(const char *kind, long n) {
    int robust = strcmp(kind, "robust") == 0;
    if (!robust && strcmp(kind, "futex") != 0) {
        fprintf(stderr, "sync: unknown counter lock %s\n", kind);
        exit(2);
    }
    st->counter = 0;
    atomic_store(&st->ready, 0);
    atomic_store(&st->go, 0);
    fflush(stdout);
    pid_t pids[2];
    for (int c = 0; c < 2; c++) {
        pids[c] = fork();
        if (pids[c] < 0) die("fork");
        if (pids[c] == 0) {
            counter_child(c, robust, n);
            _exit(0);
        }
    }
    while (atomic_load(&st->ready) < 2) sched_yield();
    int64_t t0 = now_ns();
    atomic_store_explicit(&st->go, 1, memory_order_release);
    reap(pids[0]);
    reap(pids[1]);
    if (st->counter != 2 * n) {
        fprintf(stderr, "sync: counter is %lld, not %ld\n", (long long)st->counter, 2 * n);
        exit(1);
    }
    int64_t end = st->done_ns[0] > st->done_ns[1] ? st->done_ns[0] : st->done_ns[1];
    return (double)(end - t0) / 1e6;
}

/* ----- fill ----- */

static double *array;
static long array_len;

static double fill(long n) {
    static int runs;
    if (array_len != n) {
        if (array) munmap(array, (size_t)array_len * sizeof(double));
        array = shared((size_t)n * sizeof(double));
        array_len = n;
        memset(array, 0, (size_t)n * sizeof(double)); /* fault the pages in */
    }
    double x = (double)++runs;
    /* The source, built before the fork as brood's and Python's are. */
    double *src = malloc((size_t)n * sizeof(double));
    if (!src) die("malloc");
    for (long i = 0; i < n; i++) src[i] = x;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        double t = now();
        fm_lock(&st->fm);
        memcpy(array, src, (size_t)n * sizeof(double));
        fm_unlock(&st->fm);
        st->fill_us = (now() - t) * 1e6;
        _exit(0);
    }
    reap(pid);
    free(src);
    if (array[0] != x || array[n - 1] != x) {
        fprintf(stderr, "sync: the child did not fill the array\n");
        exit(1);
    }
    return st->fill_us;
}

/* ----- shm ----- */

static char *seg, *src;
static size_t seg_len, src_len;

/* A fresh segment every call (the last one is unmapped first), faulted in
 * before the timed write: see the harness's shm test. */
static double shm_write(const char *how, size_t bytes) {
    if (seg) munmap(seg, seg_len);
    if (src_len != bytes) {
        free(src);
        src = malloc(bytes);
        if (!src) die("malloc");
        for (size_t i = 0; i < bytes; i++) src[i] = (char)(i * 31 + 7);
        src_len = bytes;
    }
    char name[64];
    snprintf(name, sizeof name, "/brood-bench-sync-c-%d", (int)getpid());
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) die("shm_open");
    if (ftruncate(fd, (off_t)bytes) != 0) die("ftruncate");
    seg = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (seg == MAP_FAILED) die("mmap");
    shm_unlink(name); /* mapped: nothing left to clean up */
    close(fd);
    seg_len = bytes;
    memset(seg, 0, bytes); /* warm: every page in */
    int copy = strcmp(how, "memcpy") == 0;
    if (!copy && strcmp(how, "memset") != 0) {
        fprintf(stderr, "sync: unknown shm write %s\n", how);
        exit(2);
    }
    static int runs;
    runs++;
    double t = now();
    if (copy)
        memcpy(seg, src, bytes);
    else
        memset(seg, runs & 0xff, bytes);
    t = now() - t;
    /* keep the compiler from doubting that the bytes matter */
    if (seg[bytes - 1] != (copy ? src[bytes - 1] : (char)(runs & 0xff))) die("shm check");
    return (double)bytes / t / 1e9;
}

/* Maps the named segment NAME whole, every page in (MAP_POPULATE), and
 * closes it; sets *len. */
static char *map_named(const char *name, int writable, size_t *len) {
    int fd = shm_open(name, writable ? O_RDWR : O_RDONLY, 0);
    if (fd < 0) die("shm_open (shmat)");
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    *len = (size_t)st.st_size;
    char *p = mmap(NULL, *len, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) die("mmap (shmat)");
    close(fd);
    return p;
}

/* The driven pair's write: one write of BYTES into the harness's segment
 * DEST (which the harness's brood row writes too, in turn), by memcpy
 * from the harness's segment SRC or by memset of BYTE; both mapped here
 * with every page in before the timed write, unmapped after. The two rows
 * of a pair write the same pages from the same pages. answer: GB/s. */
static double shm_write_at(const char *how, const char *dest, const char *arg, size_t bytes) {
    int copy = strcmp(how, "memcpy") == 0;
    if (!copy && strcmp(how, "memset") != 0) {
        fprintf(stderr, "sync: unknown shm write %s\n", how);
        exit(2);
    }
    size_t dest_len, src_len = 0;
    char *d = map_named(dest, 1, &dest_len);
    char *s = copy ? map_named(arg, 0, &src_len) : NULL;
    int byte = copy ? 0 : atoi(arg);
    if (dest_len < bytes || (copy && src_len < bytes)) {
        fprintf(stderr, "sync: shmat: segments smaller than %zu\n", bytes);
        exit(2);
    }
    double t = now();
    if (copy)
        memcpy(d, s, bytes);
    else
        memset(d, byte, bytes);
    t = now() - t;
    if (d[bytes - 1] != (copy ? s[bytes - 1] : (char)byte)) die("shmat check");
    munmap(d, dest_len);
    if (s) munmap(s, src_len);
    return (double)bytes / t / 1e9;
}

/* ----- sem ping-pong ----- */

static pid_t pong_pid;
static void stop_pong(void);

static void pong_child(void) {
    for (;;) {
        while (sem_wait(&st->ping) != 0)
            if (errno != EINTR) die("sem_wait");
        if (atomic_load(&st->stop)) _exit(0);
        sem_post(&st->pong);
    }
}

static void ping_pong(long n, double *times) {
    if (!pong_pid) {
        atomic_store(&st->stop, 0);
        fflush(stdout);
        pong_pid = fork();
        if (pong_pid < 0) die("fork");
        if (pong_pid == 0) pong_child();
    }
    for (long i = 0; i < n; i++) {
        double t = now();
        sem_post(&st->ping);
        while (sem_wait(&st->pong) != 0)
            if (errno != EINTR) die("sem_wait");
        times[i] = (now() - t) * 1e6;
    }
}

static cpu_set_t all_cpus;

/* Pins this process to `cpu` (unpins it for -1); the children forked from
 * now on (counter, fill, the next ping-pong child) inherit that. */
static void pin(int cpu) {
    stop_pong();
    cpu_set_t set;
    if (cpu < 0) {
        set = all_cpus;
    } else {
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
    }
    if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");
}

static void stop_pong(void) {
    if (!pong_pid) return;
    atomic_store(&st->stop, 1);
    sem_post(&st->ping);
    reap(pong_pid);
    pong_pid = 0;
}

/* ----- modes ----- */

static void setup(void) {
    if (sched_getaffinity(0, sizeof all_cpus, &all_cpus) != 0) die("sched_getaffinity");
    st = shared(sizeof *st);
    if (sem_init(&st->sem, 1, 1) != 0) die("sem_init");
    if (sem_init(&st->ping, 1, 0) != 0) die("sem_init");
    if (sem_init(&st->pong, 1, 0) != 0) die("sem_init");
    robust_init(&st->robust);
    robust_init(&st->robustlist);
    robust_init(&st->glibclist);
    rl_setup();
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, size_t n, double q) {
    return sorted[(size_t)((double)(n - 1) * q + 0.5)];
}

/* median, then min and max of the n samples (p10 and p90 with `percentiles`) */
static void line(const char *test, const char *name, double *v, size_t n, int percentiles) {
    qsort(v, n, sizeof(double), cmp_double);
    double lo = percentiles ? pct(v, n, 0.1) : v[0];
    double hi = percentiles ? pct(v, n, 0.9) : v[n - 1];
    printf("sync\t%s\t%s\t%.4f\t%.4f\t%.4f\t%zu\n", test, name, pct(v, n, 0.5), lo, hi, n);
    fflush(stdout);
}

/* The harness's counts (bench/src/sync.rs). */
#define LOCK_PAIRS 5000000L
#define LOCK_RUNS 7
#define COUNTER_N 100000L
#define COUNTER_RUNS 15
#define FILL_N 1000000L
#define FILL_RUNS 15
#define SHM_BYTES (100UL << 20)
#define SHM_RUNS 10
#define SEM_WARMUP 2000
#define SEM_ITERS 20000

static void standalone(void) {
    double v[SEM_ITERS];
    static const char *locks[][2] = {{"futex", "C futex mutex (3-state, shared)"},
                                     {"sem", "C sem_t (pshared) sem_wait/sem_post"},
                                     {"robust", "C pthread mutex (pshared, robust, errorcheck)"},
                                     {"robustlist", "C robust-list protocol inline (brood's fast path in C)"},
                                     {"glibc", "C glibc's robust-list protocol inline"},
                                     {"tid", "C futex word holding the owner's TID"}};
    for (int k = 0; k < 6; k++) {
        lock_pairs(locks[k][0], LOCK_PAIRS / 5);
        for (int r = 0; r < LOCK_RUNS; r++) v[r] = lock_pairs(locks[k][0], LOCK_PAIRS);
        line("lock", locks[k][1], v, LOCK_RUNS, 0);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int can_pin = cpus > 1 && CPU_ISSET(cpus - 1, &all_cpus);
    for (int pinned = 0; pinned <= can_pin; pinned++) {
        if (pinned) pin((int)cpus - 1);
        for (int k = 0; k < 3; k += 2) {
            counter(locks[k][0], COUNTER_N);
            for (int r = 0; r < COUNTER_RUNS; r++) v[r] = counter(locks[k][0], COUNTER_N);
            line(pinned ? "counter-pinned" : "counter", locks[k][1], v, COUNTER_RUNS, 0);
        }
        if (pinned) pin(-1);
    }
    fill(FILL_N);
    for (int r = 0; r < FILL_RUNS; r++) v[r] = fill(FILL_N);
    line("fill", "C futex mutex + memcpy", v, FILL_RUNS, 0);
    static const char *writes[][2] = {{"memcpy", "C memcpy"}, {"memset", "C memset"}};
    for (int k = 0; k < 2; k++) {
        shm_write(writes[k][0], SHM_BYTES);
        for (int r = 0; r < SHM_RUNS; r++) v[r] = shm_write(writes[k][0], SHM_BYTES);
        line("shm", writes[k][1], v, SHM_RUNS, 0);
    }
    ping_pong(SEM_WARMUP, v);
    ping_pong(SEM_ITERS, v);
    line("sem", "C sem_t (pshared)", v, SEM_ITERS, 1);
    if (can_pin) {
        pin((int)cpus - 1);
        ping_pong(SEM_WARMUP, v);
        ping_pong(SEM_ITERS, v);
        line("sem-pinned", "C sem_t (pshared)", v, SEM_ITERS, 1);
        pin(-1);
    }
}

static void driven(void) {
    char line_[640], a[32], dest[256], arg[256];
    long n;
    double *times = NULL;
    long cap = 0;
    while (fgets(line_, sizeof line_, stdin)) {
        if (sscanf(line_, "lock %31s %ld", a, &n) == 2 && n > 0) {
            printf("%.6f\n", lock_pairs(a, n));
        } else if (sscanf(line_, "counter %31s %ld", a, &n) == 2 && n > 0) {
            printf("%.6f\n", counter(a, n));
        } else if (sscanf(line_, "fill %ld", &n) == 1 && n > 0) {
            printf("%.6f\n", fill(n));
        } else if (sscanf(line_, "shmat %31s %255s %255s %ld", a, dest, arg, &n) == 4 && n > 0) {
            printf("%.6f\n", shm_write_at(a, dest, arg, (size_t)n));
        } else if (sscanf(line_, "shm %31s %ld", a, &n) == 2 && n > 0) {
            printf("%.6f\n", shm_write(a, (size_t)n));
        } else if (sscanf(line_, "pin %ld", &n) == 1) {
            pin((int)n);
            printf("ok\n");
        } else if (sscanf(line_, "sem %ld", &n) == 1 && n > 0) {
            if (n > cap) {
                times = realloc(times, sizeof(double) * (size_t)n);
                if (!times) die("realloc");
                cap = n;
            }
            ping_pong(n, times);
            for (long i = 0; i < n; i++) printf(i ? " %.3f" : "%.3f", times[i]);
            printf("\n");
        } else {
            break;
        }
        fflush(stdout);
    }
    free(times);
}

int main(int argc, char **argv) {
    int is_driven = argc == 2 && strcmp(argv[1], "--driven") == 0;
    if (argc > 1 && !is_driven) {
        fprintf(stderr, "usage: sync [--driven]\n");
        return 2;
    }
    setup();
    if (is_driven)
        driven();
    else
        standalone();
    stop_pong();
    return 0;
}
