//! The "Pool" table: `brood::Pool` against Python's `multiprocessing.Pool`
//! and `ProcessPoolExecutor` (in `bench/python/pool.py`), procspawn's pool,
//! and a floor of our own: pre-forked workers over raw pipes (Rust and
//! libc, no codec, tasks and results batched by the pipe's buffer).
//!
//! Workloads (2 workers unless said):
//! - `trivial`: 100,000 tasks `x + 1` without chunking (chunksize 1);
//! - `automap`: `map` over 1,000,000 items with the automatic chunksize;
//! - `apply_async`: 10,000 `apply_async` then every `get`;
//! - `cpu`: 16 CPU-bound tasks (~20 ms each) on 1 and on 2 workers;
//! - `scale`: 50,000 trivial tasks without chunking on 1, 2 and 4 workers.
//!
//! Each row runs [`RUNS`] times after one untimed run (pools are started
//! once per row and reused). Prints
//! `pool<TAB>workload<TAB>name<TAB>median_rate<TAB>slowest<TAB>fastest<TAB>runs`
//! with rates in tasks (items) per second.

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use brood::Pool;

use crate::selected;

const RUNS: usize = 5;
const TRIVIAL: u64 = 100_000;
const AUTOMAP: u64 = 1_000_000;
const APPLY: u64 = 10_000;
const CPU_TASKS: u64 = 16;
const CPU_SPIN: u64 = 20_000_000;
const SCALE: u64 = 50_000;
const PROCSPAWN_TASKS: u64 = 10_000;

/// One row: its workload, its name, and one timed run returning how many
/// tasks it did.
struct Row {
    workload: &'static str,
    name: String,
    run: Box<dyn FnMut() -> u64>,
}

fn spin(n: u64) -> u64 {
    let mut x = n;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

fn pool(n: usize) -> Pool {
    Pool::new(n).expect("a pool")
}

fn rows(only: Option<&str>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut add =
        |workload: &'static str, name: &str, make: &dyn Fn() -> Box<dyn FnMut() -> u64>| {
            if selected(only, "pool", &format!("{workload} {name}")) {
                rows.push(Row {
                    workload,
                    name: name.to_string(),
                    run: make(),
                });
            }
        };
    add("trivial", "brood chunksize(1).map", &|| {
        let p = pool(2);
        Box::new(move || {
            let v = p.chunksize(1).map(|x: u64| x + 1, 0..TRIVIAL).unwrap();
            assert_eq!(v.len() as u64, TRIVIAL);
            TRIVIAL
        })
    });
    add("trivial", "brood imap_unordered", &|| {
        let p = pool(2);
        Box::new(move || {
            let n = p.imap_unordered(|x: u64| x + 1, 0..TRIVIAL).count() as u64;
            assert_eq!(n, TRIVIAL);
            n
        })
    });
    add(
        "trivial",
        "raw pre-forked pipes, batched both ways (Rust)",
        &|| Box::new(|| raw_floor(2, TRIVIAL, false)),
    );
    add(
        "trivial",
        "raw pre-forked pipes, one write per result (Rust)",
        &|| Box::new(|| raw_floor(2, TRIVIAL, true)),
    );
    add("trivial", "procspawn Pool::spawn", &|| {
        let p = procspawn::Pool::new(2).unwrap();
        Box::new(move || {
            // Each pending handle holds IPC channels (fds): keep 256 in flight.
            let mut x = 0;
            while x < PROCSPAWN_TASKS {
                let handles: Vec<_> = (x..(x + 256).min(PROCSPAWN_TASKS))
                    .map(|x| p.spawn(x, |x: u64| x + 1))
                    .collect();
                x += handles.len() as u64;
                for h in handles {
                    h.join().unwrap();
                }
            }
            PROCSPAWN_TASKS
        })
    });
    add("automap", "brood map (auto chunksize)", &|| {
        let p = pool(2);
        Box::new(move || {
            let v = p.map(|x: u64| x + 1, 0..AUTOMAP).unwrap();
            assert_eq!(v.len() as u64, AUTOMAP);
            AUTOMAP
        })
    });
    add("apply_async", "brood apply_async", &|| {
        let p = pool(2);
        Box::new(move || {
            let rs: Vec<_> = (0..APPLY)
                .map(|x| p.apply_async(|x: u64| x + 1, x).unwrap())
                .collect();
            for r in rs {
                r.get().unwrap();
            }
            APPLY
        })
    });
    for n in [1usize, 2] {
        let name = format!("brood {n} worker{}", if n == 1 { "" } else { "s" });
        add("cpu", &name, &|| {
            let p = pool(n);
            Box::new(move || {
                let v = p
                    .chunksize(1)
                    .map(spin, vec![CPU_SPIN; CPU_TASKS as usize])
                    .unwrap();
                black_box(v);
                CPU_TASKS
            })
        });
    }
    for n in [1usize, 2, 4] {
        let name = format!(
            "brood chunksize(1).map, {n} worker{}",
            if n == 1 { "" } else { "s" }
        );
        add("scale", &name, &|| {
            let p = pool(n);
            Box::new(move || {
                let v = p.chunksize(1).map(|x: u64| x + 1, 0..SCALE).unwrap();
                assert_eq!(v.len() as u64, SCALE);
                SCALE
            })
        });
        let name = format!(
            "raw pre-forked pipes, one write per result, {n} worker{}",
            if n == 1 { "" } else { "s" }
        );
        add("scale", &name, &|| {
            Box::new(move || raw_floor(n, SCALE, true))
        });
    }
    rows
}

pub(crate) fn run(only: Option<&str>) {
    let mut rows = rows(only);
    for row in &mut rows {
        (row.run)(); // warm-up
    }
    let mut rates: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..RUNS {
        for (row, rates) in rows.iter_mut().zip(&mut rates) {
            let t = Instant::now();
            let n = (row.run)();
            rates.push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    for (row, mut rates) in rows.iter().zip(rates) {
        rates.sort_by(f64::total_cmp);
        println!(
            "pool\t{}\t{}\t{:.0}\t{:.0}\t{:.0}\t{}",
            row.workload,
            row.name,
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            rates.len()
        );
    }
}

/// The row names, for `--help`.
pub(crate) fn row_names() -> Vec<String> {
    ["trivial", "automap", "apply_async", "cpu", "scale"]
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn raw_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is two writable ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Tasks in flight per worker at most (8-byte tasks and results: both
/// pipes stay under their 64 KiB, so no write ever blocks the other side).
const RAW_WINDOW: u64 = 4096;

/// `n` tasks `x + 1` on `workers` pre-forked children over raw pipes; the
/// parent keeps each worker's pipe fed (batches of up to 4096 tasks) and
/// reads results as they come. Each worker answers a whole read at once,
/// or, with `per_result`, writes each result as soon as it has it (what a
/// pool must do to know which task a dead worker held: brood's design).
fn raw_floor(workers: usize, n: u64, per_result: bool) -> u64 {
    let mut kids = Vec::new();
    for _ in 0..workers {
        let (task_r, task_w) = raw_pipe();
        let (res_r, res_w) = raw_pipe();
        // SAFETY: the child only calls read, write and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Close the earlier workers' pipe ends this copy inherited, or
            // they would never see end of file.
            drop(std::mem::take(&mut kids));
            drop(task_w);
            drop(res_r);
            let mut buf = vec![0u8; 32 << 10];
            let mut out = vec![0u8; 32 << 10];
            let mut carry = 0usize;
            loop {
                // SAFETY: `buf[carry..]` is writable.
                let got = unsafe {
                    libc::read(
                        task_r.as_raw_fd(),
                        buf[carry..].as_mut_ptr().cast(),
                        buf.len() - carry,
                    )
                };
                if got <= 0 {
                    // SAFETY: leaving the child.
                    unsafe { libc::_exit(0) };
                }
                let have = carry + got as usize;
                let whole = have / 8 * 8;
                for (i, chunk) in buf[..whole].chunks_exact(8).enumerate() {
                    let x = u64::from_le_bytes(chunk.try_into().unwrap());
                    out[i * 8..i * 8 + 8].copy_from_slice(&(x + 1).to_le_bytes());
                }
                let step = if per_result { 8 } else { whole.max(1) };
                let mut off = 0;
                while off < whole {
                    // SAFETY: `out[off..whole]` is readable.
                    let w = unsafe {
                        libc::write(
                            res_w.as_raw_fd(),
                            out[off..].as_ptr().cast(),
                            step.min(whole - off),
                        )
                    };
                    if w <= 0 {
                        // SAFETY: leaving the child.
                        unsafe { libc::_exit(1) };
                    }
                    off += w as usize;
                }
                buf.copy_within(whole..have, 0);
                carry = have - whole;
            }
        }
        drop(task_r);
        drop(res_w);
        kids.push((pid, task_w, res_r, 0u64, 0u64)); // (pid, tasks, results, sent, result bytes)
    }
    let share = n / workers as u64;
    let mut next = 0u64;
    let mut done = 0u64;
    let mut buf = vec![0u8; 32 << 10];
    while done < share * workers as u64 {
        for (_, task_w, _, sent, received) in kids.iter_mut() {
            let room = RAW_WINDOW - (*sent - *received / 8);
            let k = room.min(share - *sent).min(4096);
            if k == 0 {
                continue;
            }
            let mut batch = Vec::with_capacity(k as usize * 8);
            for _ in 0..k {
                batch.extend_from_slice(&next.to_le_bytes());
                next += 1;
            }
            let mut off = 0;
            while off < batch.len() {
                // SAFETY: `batch[off..]` is readable.
                let w = unsafe {
                    libc::write(
                        task_w.as_raw_fd(),
                        batch[off..].as_ptr().cast(),
                        batch.len() - off,
                    )
                };
                assert!(w > 0);
                off += w as usize;
            }
            *sent += k;
        }
        let mut pfds: Vec<libc::pollfd> = kids
            .iter()
            .map(|k| libc::pollfd {
                fd: k.2.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid pollfd array.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        for (k, p) in kids.iter_mut().zip(&pfds) {
            if p.revents == 0 {
                continue;
            }
            // SAFETY: `buf` is writable.
            let got = unsafe { libc::read(k.2.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert!(got > 0);
            // Count bytes: a read may end inside a result word.
            k.4 += got as u64;
        }
        done = kids_done(&kids);
    }
    for (pid, task_w, res_r, _, _) in kids {
        drop(task_w);
        drop(res_r);
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    done
}

fn kids_done(kids: &[(i32, OwnedFd, OwnedFd, u64, u64)]) -> u64 {
    kids.iter().map(|k| k.4 / 8).sum()
}
