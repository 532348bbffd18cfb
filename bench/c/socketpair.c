/*
 * The pipes table's floor: a raw AF_UNIX stream socketpair, blocking
 * write/read, SO_SNDBUF/SO_RCVBUF 256 KiB (the buffers brood's pipe()
 * asks for, so the floor and brood run on the same socket setup), a forked
 * child. No framing on the measured path.
 *
 * - round trip: the parent writes 8 bytes, the child reads them and writes
 *   them back; each round trip is timed;
 * - throughput: the parent writes n messages of 1 MiB (one write call each,
 *   looping on short writes), the child reads them into one reused buffer
 *   and writes a 1-byte ack at the end of the run; the run is timed.
 *
 * Before each batch (untimed) the parent tells the child what comes with
 * an 8-byte header: {command, count}.
 *
 * Two modes:
 * - `--driven`: the Rust harness (src/pipes.rs) runs this program as one
 *   row of its pipes table and interleaves it with the others. Commands on
 *   stdin, one per line: `rtt N` (answer: N round-trip times in µs on one
 *   line), `bw N` (answer: the run's seconds), `exit`.
 * - standalone (no argument): runs the harness's schedule on its own
 *   (2000 warm-up and 20000 timed round trips; a 64 MiB warm-up run and
 *   4 runs of 512 MiB) and prints the harness's TSV lines:
 *     rtt<TAB>cpus<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n
 *     bw<TAB>cpus<TAB>name<TAB>GBps<TAB>slowest_run_GBps<TAB>fastest_run_GBps<TAB>runs<TAB>MiB_per_run
 *
 * Built by bench/run with `cc -O2` into bench/target/socketpair.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "raw socketpair (C)"
#define RTT_LEN 8
#define BIG_LEN (1 << 20)
#define RTT_WARMUP 2000
#define RTT_ITERS 20000
#define BW_MSGS 512
#define BW_RUNS 4
#define BW_WARMUP_MSGS 64
#define SOCKET_BUFFER (256 << 10) /* brood's connection::SOCKET_BUFFER */

enum { CMD_RTT = 1, CMD_BW = 2, CMD_EXIT = 3 };

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void read_exact(int fd, char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = read(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (n == 0) {
            fprintf(stderr, "socketpair: unexpected end of file\n");
            exit(1);
        }
        buf += n;
        len -= (size_t)n;
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void tell(int fd, uint32_t cmd, uint32_t n) {
    uint32_t header[2] = {cmd, n};
    write_all(fd, (const char *)header, sizeof header);
}

static void child(int fd, char *big) {
    for (;;) {
        uint32_t header[2];
        read_exact(fd, (char *)header, sizeof header);
        if (header[0] == CMD_RTT) {
            char msg[RTT_LEN];
            for (uint32_t i = 0; i < header[1]; i++) {
                read_exact(fd, msg, RTT_LEN);
                write_all(fd, msg, RTT_LEN);
            }
        } else if (header[0] == CMD_BW) {
            for (uint32_t i = 0; i < header[1]; i++) read_exact(fd, big, BIG_LEN);
            write_all(fd, "k", 1);
        } else {
            return;
        }
    }
}

/* n timed round trips into times[0..n), µs */
static void round_trips(int fd, int n, double *times) {
    char msg[RTT_LEN] = "01234567";
    tell(fd, CMD_RTT, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        double t = now();
        write_all(fd, msg, RTT_LEN);
        read_exact(fd, msg, RTT_LEN);
        times[i] = (now() - t) * 1e6;
    }
}

/* one throughput run of n messages; seconds */
static double stream(int fd, int n, const char *big) {
    char ack;
    tell(fd, CMD_BW, (uint32_t)n);
    double t = now();
    for (int i = 0; i < n; i++) write_all(fd, big, BIG_LEN);
    read_exact(fd, &ack, 1);
    return now() - t;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double q) {
    /* rounds half away from zero, as the Rust harness does */
    return sorted[(size_t)((double)(n - 1) * q + 0.5)];
}

static void standalone(int fd, const char *big) {
    double *times = malloc(sizeof(double) * RTT_ITERS);
    if (!times) die("malloc");
    round_trips(fd, RTT_WARMUP < RTT_ITERS ? RTT_WARMUP : RTT_ITERS, times);
    round_trips(fd, RTT_ITERS, times);
    qsort(times, RTT_ITERS, sizeof(double), cmp_double);
    stream(fd, BW_WARMUP_MSGS, big);
    double total = 0, slowest = 0, fastest = 1e30;
    for (int r = 0; r < BW_RUNS; r++) {
        double s = stream(fd, BW_MSGS, big);
        total += s;
        if (s > slowest) slowest = s;
        if (s < fastest) fastest = s;
    }
    double run_bytes = (double)BW_MSGS * BIG_LEN;
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    printf("rtt\t%d\t%s\t%.2f\t%.2f\t%.2f\t%d\n", cpus, NAME, percentile(times, RTT_ITERS, 0.5),
           percentile(times, RTT_ITERS, 0.1), percentile(times, RTT_ITERS, 0.9), RTT_ITERS);
    printf("bw\t%d\t%s\t%.3f\t%.3f\t%.3f\t%d\t%d\n", cpus, NAME, run_bytes * BW_RUNS / total / 1e9,
           run_bytes / slowest / 1e9, run_bytes / fastest / 1e9, BW_RUNS, BW_MSGS);
    free(times);
}

static void driven(int fd, const char *big) {
    char line[64];
    double *times = NULL;
    int cap = 0;
    while (fgets(line, sizeof line, stdin)) {
        int n;
        if (sscanf(line, "rtt %d", &n) == 1 && n > 0) {
            if (n > cap) {
                times = realloc(times, sizeof(double) * (size_t)n);
                if (!times) die("realloc");
                cap = n;
            }
            round_trips(fd, n, times);
            for (int i = 0; i < n; i++) printf(i ? " %.3f" : "%.3f", times[i]);
            printf("\n");
        } else if (sscanf(line, "bw %d", &n) == 1 && n > 0) {
            printf("%.9f\n", stream(fd, n, big));
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
        fprintf(stderr, "usage: socketpair [--driven]\n");
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    int size = SOCKET_BUFFER;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    char *big = malloc(BIG_LEN);
    if (!big) die("malloc");
    for (int i = 0; i < BIG_LEN; i++) big[i] = (char)(i * 31 + 7);

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(sv[0]);
        child(sv[1], big);
        _exit(0);
    }
    close(sv[1]);
    if (is_driven)
        driven(sv[0], big);
    else
        standalone(sv[0], big);
    tell(sv[0], CMD_EXIT, 0);
    int status;
    if (waitpid(pid, &status, 0) != pid || status != 0) die("waitpid");
    return 0;
}
