//! The Rust side of the side-by-side benchmarks. Four tables:
//!
//! - `start`: "start + join of a child that returns at once", one
//!   [`Workload`] per row;
//! - `pipes`: round trip of an 8-byte message and throughput of 1 MiB
//!   messages between two processes, one transport per row (see
//!   [`pipes`]);
//! - `sync`: shared memory and locks: uncontended lock pairs, a locked
//!   counter in two processes, an array filled by a child, 100 MiB writes
//!   to a shared memory segment, semaphore ping-pong (see [`sync`]);
//! - `queue`: brood's `Queue` against ipc-channel and crossbeam-channel,
//!   1→1, 4×4 and round trip (see [`queue`]).
//!
//! Prints one TSV line per measurement, the table's name first:
//!
//! - `start<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n`
//! - `rtt<TAB>cpus<TAB>name<TAB>median_us<TAB>p10_us<TAB>p90_us<TAB>n`
//! - `bw<TAB>cpus<TAB>name<TAB>GBps<TAB>slowest_run_GBps<TAB>fastest_run_GBps<TAB>runs<TAB>MiB_per_run`
//! - `sync<TAB>test<TAB>name<TAB>median<TAB>lo<TAB>hi<TAB>n`
//! - `queue<TAB>test<TAB>name<TAB>value<TAB>n`
//!
//! where `cpus` is how many CPUs the harness (and so its children) may run
//! on: `bench/run` runs the pipes table twice, as the scheduler places it
//! and pinned to one CPU.
//!
//! Usage: `brood-bench [--table start|pipes|sync] [--iters N] [--only SUBSTRING]`.
//! `--table` runs one table (all three by default); `--iters` overrides every
//! start row's iteration count; `--only` keeps the rows whose name, or whose
//! table's name (`start`, `pipes`, or `sync` and the test's: `sync lock`,
//! `sync counter`, `sync fill`, `sync shm`, `sync sem`), contains it. Run through `bench/run`,
//! which also runs the Python and C sides and writes the report.

mod events;
mod executor;
mod manager;
mod pipes;
mod pool;
mod queue;
mod redis_objects;
mod redis_pool;
mod sync;

/// Starts a C floor program in `--driven` mode, found through `$env`, else
/// as `name` in the directory above this executable's (where `bench/run`
/// builds it: `bench/target/`). `None`, with a note, when it is missing.
pub(crate) fn start_c_driver(
    env: &str,
    name: &str,
) -> Option<(
    std::process::Child,
    std::process::ChildStdin,
    std::io::BufReader<std::process::ChildStdout>,
)> {
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    let path = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.join(name))
    })?;
    let spawned = Command::new(&path)
        .arg("--driven")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "brood-bench: no C floor ({}: {e}); build it with bench/run",
                path.display()
            );
            return None;
        }
    };
    let cmd = child.stdin.take()?;
    let out = std::io::BufReader::new(child.stdout.take()?);
    Some((child, cmd, out))
}

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use std::time::Instant;

/// One row of the start table: a name and one start+join to time.
struct Workload {
    name: &'static str,
    /// Timed iterations by default (`--iters` overrides).
    iters: usize,
    /// One iteration: start a child that returns at once, and join it.
    run: fn(),
}

/// The start table's rows. Add a row here to add a workload. Rows run
/// interleaved, so no row may leave a thread behind: brood refuses to fork
/// a threaded program (procspawn's `spawn` starts none; its pools do; the
/// forkserver is a process, not a thread).
#[rustfmt::skip]
const WORKLOADS: &[Workload] = &[
    Workload { name: "raw fork+_exit+waitpid", iters: 2000, run: raw_fork },
    Workload { name: "brood fork", iters: 2000, run: brood_fork },
    Workload { name: "brood forkserver", iters: 1000, run: brood_forkserver },
    Workload { name: "re-exec floor (same binary, does nothing)", iters: 300, run: reexec_floor },
    Workload { name: "brood spawn", iters: 300, run: brood_spawn },
    Workload { name: "procspawn (re-exec)", iters: 300, run: procspawn_reexec },
];

/// The floor: what the kernel charges for fork, exit and reap.
fn raw_fork() {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: `_exit` never returns and touches no parent state.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
    reap(pid);
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; `pid` is our unreaped child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(
        r,
        pid,
        "waitpid failed: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(status, 0, "child exited with wait status {status:#x}");
}

/// `Process::fork` pins the fork start method (`Process::new` follows
/// `get_start_method`, whose default is the forkserver).
fn brood_fork() {
    let mut p = brood::Process::fork(|| ());
    p.start().unwrap();
    p.join().unwrap();
}

/// The first call starts the server (a re-exec); the warm-up pays for it.
fn brood_forkserver() {
    let mut p = brood::Process::builder()
        .start_method(brood::StartMethod::ForkServer)
        .target(|| ());
    p.start().unwrap();
    p.join().unwrap();
}

fn brood_spawn() {
    let mut p = brood::Process::builder()
        .start_method(brood::StartMethod::Spawn)
        .target(|| ());
    p.start().unwrap();
    p.join().unwrap();
}

/// The environment and argv[0] a spawned brood child gets, built once: the
/// floor charges only the kernel and the dynamic loader.
struct Exec {
    argv0: CString,
    env: Vec<CString>,
}

fn exec_args() -> &'static Exec {
    static EXEC: OnceLock<Exec> = OnceLock::new();
    EXEC.get_or_init(|| {
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k.as_bytes() != b"__BROOD_BOOTSTRAP")
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        env.push(c"__BROOD_BOOTSTRAP=noop".to_owned());
        let argv0 = std::env::args_os()
            .next()
            .and_then(|a| CString::new(a.as_bytes()).ok())
            .unwrap_or_else(|| c"brood-bench".to_owned());
        Exec { argv0, env }
    })
}

/// The spawn floor: `posix_spawn` of this same binary, whose brood
/// bootstrap (before `main`) sees `__BROOD_BOOTSTRAP=noop` and exits 0 at
/// once; then `waitpid`. What every re-exec pays: vfork-style clone, exec,
/// loading and relocating the binary, exit, reap.
fn reexec_floor() {
    let exec = exec_args();
    let mut envp: Vec<*mut libc::c_char> = exec.env.iter().map(|s| s.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    let argv = [
        exec.argv0.as_ptr() as *mut libc::c_char,
        std::ptr::null_mut(),
    ];
    let mut pid: libc::pid_t = 0;
    // SAFETY: path, argv and envp are NUL-terminated and outlive the call;
    // null file actions and attributes mean "none".
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            c"/proc/self/exe".as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    assert_eq!(
        rc,
        0,
        "posix_spawn failed: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    reap(pid);
}

fn procspawn_reexec() {
    procspawn::spawn((), |()| ()).join().unwrap();
}

/// Each row's iterations are split into this many rounds, run in turn.
const ROUNDS: usize = 10;

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Prints one harness line: `head` (the table and what names the row
/// before it), then the median, p10 and p90 of `sorted` with `decimals`
/// decimals, then `n`, tab-separated (see bench/README.md).
pub(crate) fn print_quantiles(head: &str, sorted: &[f64], decimals: usize, n: usize) {
    let q = |p| percentile(sorted, p);
    println!(
        "{head}\t{:.decimals$}\t{:.decimals$}\t{:.decimals$}\t{n}",
        q(0.5),
        q(0.1),
        q(0.9)
    );
}

/// Whether a row is kept by `--only`: its name or its table's contains it.
pub(crate) fn selected(only: Option<&str>, table: &str, name: &str) -> bool {
    only.is_none_or(|s| name.contains(s) || table.contains(s))
}

fn main() {
    // A brood-redis worker node started by the redis table runs here.
    redis_pool::worker_main();
    procspawn::init();

    let mut iters: Option<usize> = None;
    let mut only: Option<String> = None;
    let mut table: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iters" => {
                iters = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&n| n > 0)
                        .expect("--iters needs a positive number"),
                )
            }
            "--only" => only = Some(args.next().expect("--only needs a substring")),
            "--table" => {
                let tables = [
                    "start",
                    "pipes",
                    "sync",
                    "queue",
                    "pool",
                    "executor",
                    "manager",
                    "events",
                    "redis",
                    "redis-objects",
                ];
                let t = args
                    .next()
                    .unwrap_or_else(|| panic!("--table needs one of {}", tables.join(", ")));
                assert!(
                    tables.contains(&t.as_str()),
                    "--table is one of {}, not {t:?}",
                    tables.join(", ")
                );
                table = Some(t);
            }
            "-h" | "--help" => {
                eprintln!(
                    "usage: brood-bench [--table start|pipes|sync|queue|manager] [--iters N] [--only SUBSTRING]"
                );
                eprintln!("start table (--iters overrides the counts):");
                for w in WORKLOADS {
                    eprintln!("  {} (default {} iterations)", w.name, w.iters);
                }
                eprintln!("pipes table:");
                for name in pipes::ROW_NAMES {
                    eprintln!("  {name}");
                }
                eprintln!(
                    "sync table (test: row; counter and sem run again pinned to one CPU, as counter-pinned and sem-pinned):"
                );
                for name in sync::row_names() {
                    eprintln!("  {name}");
                }
                eprintln!("pool table (workloads):");
                for name in pool::row_names() {
                    eprintln!("  {name}");
                }
                eprintln!("executor table (workloads):");
                for name in executor::row_names() {
                    eprintln!("  {name}");
                }
                eprintln!("queue table (test: row):");
                for (test, name) in queue::ROW_NAMES {
                    eprintln!("  {test}: {name}");
                }
                eprintln!("manager table:");
                for name in manager::row_names() {
                    eprintln!("  {name}");
                }
                eprintln!("redis-objects table (test: row):");
                for name in redis_objects::row_names() {
                    eprintln!("  {name}");
                }
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    if table.as_deref().is_none_or(|t| t == "start") {
        start_table(iters, only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "pipes") {
        pipes::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "sync") {
        sync::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "pool") {
        pool::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "executor") {
        executor::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "queue") {
        queue::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "manager") {
        manager::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "events") {
        events::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "redis") {
        redis_pool::run(only.as_deref());
    }
    if table.as_deref().is_none_or(|t| t == "redis-objects") {
        redis_objects::run(only.as_deref());
    }
}

fn start_table(iters: Option<usize>, only: Option<&str>) {
    let rows: Vec<(&Workload, usize)> = WORKLOADS
        .iter()
        .filter(|w| selected(only, "start", w.name))
        .map(|w| (w, iters.unwrap_or(w.iters)))
        .collect();
    // Warm-up: page in code, fill allocator caches, let the first re-exec
    // load the binary into the page cache, start the forkserver.
    for &(w, n) in &rows {
        for _ in 0..(n / 10).clamp(5, 200) {
            (w.run)();
        }
    }
    // Timed iterations, interleaved in rounds so that a burst of load from
    // elsewhere on the machine hits every row alike.
    let mut times: Vec<Vec<f64>> = rows.iter().map(|&(_, n)| Vec::with_capacity(n)).collect();
    for round in 0..ROUNDS {
        for (&(w, n), times) in rows.iter().zip(&mut times) {
            let share = n * (round + 1) / ROUNDS - n * round / ROUNDS;
            for _ in 0..share {
                let t = Instant::now();
                (w.run)();
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    // brood fork against raw fork, pair by pair: the two alternate, which
    // goes first alternating too, and each pair's ratio is taken (a pair
    // sees the same moment of the machine: what else runs, where the
    // scheduler puts the child, whether the other CPU sleeps).
    let paired = ["raw fork+_exit+waitpid", "brood fork"]
        .map(|name| rows.iter().find(|(w, _)| w.name == name).copied());
    if let [Some((raw, n)), Some((brood, _))] = paired {
        let mut ratios = Vec::with_capacity(n);
        for i in 0..n {
            let mut t = [0.0; 2];
            for k in 0..2 {
                let which = (i + k) % 2;
                let w = [raw, brood][which];
                let start = Instant::now();
                (w.run)();
                t[which] = start.elapsed().as_secs_f64();
            }
            ratios.push(t[1] / t[0]);
        }
        ratios.sort_by(f64::total_cmp);
        print_quantiles(&format!("start-paired\t{}", brood.name), &ratios, 4, n);
    }
    for (&(w, n), mut times) in rows.iter().zip(times) {
        times.sort_by(f64::total_cmp);
        print_quantiles(&format!("start\t{}", w.name), &times, 1, n);
    }
}
