//! Start methods: the reference's `Process` example under fork, spawn and
//! forkserver, what each child inherits, what each costs, what threads
//! forbid, and tasks called by name.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use brood::os::{self, Pid, ProcState};
use brood::{Context, ErrorKind, Process, StartMethod};
use serde::{Deserialize, Serialize};

use super::kit::{self, BOUND, Guarded, code, explain, line, line_wrapped, python};
use super::reference;

/// The reference's global `a`: 1 when the program starts. The tour sets it
/// to 2 before starting the children, so a child that finds 2 is a copy of
/// the tour, and one that finds 1 is a fresh start of the program.
static A: AtomicI32 = AtomicI32::new(1);

/// What [`fun`] saw in the child.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    /// Its pid.
    pid: i32,
    /// Its getppid(): who forked it.
    ppid: i32,
    /// The `a` it found before setting it to 10000.
    found: i32,
    /// `brood::parent_process()`'s pid: who started it, for brood.
    parent: Option<i32>,
    /// Its command line, from `/proc/self/cmdline`.
    cmdline: Vec<String>,
}

/// The reference's `fun`: says it runs, and sets its own `a` to 10000.
fn fun() -> Report {
    let found = A.swap(10_000, Ordering::SeqCst);
    line(
        "child",
        format!(
            "子进程事件 {}: found a = {found}, set a = {}",
            os::getpid(),
            A.load(Ordering::SeqCst)
        ),
    );
    let cmdline = std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Report {
        pid: os::getpid().as_raw(),
        ppid: os::getppid().as_raw(),
        found,
        parent: brood::parent_process().map(|p| p.pid.as_raw()),
        cmdline,
    }
}

/// A task registered by name: any start method, or another build of this
/// program, can call it.
#[brood::task]
fn greet(who: String, times: u32) -> String {
    let hellos = vec![format!("hello {who}"); times as usize].join(", ");
    format!("{hellos} (from pid {})", os::getpid())
}

/// The tour's own children that are alive (not zombies): before a first
/// forkserver use, and after, to spot the server it started.
fn live_children() -> Result<HashSet<Pid>> {
    Ok(os::proc::children(os::getpid())?
        .into_iter()
        .filter(|k| k.state != ProcState::Zombie)
        .map(|k| k.pid)
        .collect())
}

/// Runs the reference's example under `method` and checks what the child
/// found; returns how long start + join took, and whether that included
/// starting the forkserver.
fn run_under(method: StartMethod, label: &str) -> Result<(Duration, bool)> {
    let tour = os::getpid();
    let before = live_children()?;
    kit::flush();
    let t0 = Instant::now();
    let mut p = Guarded(
        Context::new(method)
            .builder()
            .name(format!("fun-{method}"))
            .target(fun),
    );
    p.start()?;
    let report = p.join_timeout(BOUND)?;
    let took = t0.elapsed();
    let used = p
        .start_method()
        .context("a started process has a start method")?;
    ensure!(
        used == method,
        "asked for {method}, the child was started with {used}"
    );
    ensure!(
        p.pid().map(Pid::as_raw) == Some(report.pid),
        "pid() says {:?}, the child says {}",
        p.pid(),
        report.pid
    );
    ensure!(
        report.parent == Some(tour.as_raw()),
        "parent_process() in the child should be the tour ({tour}), is {:?}",
        report.parent
    );
    let forker = if report.ppid == tour.as_raw() {
        "the tour"
    } else {
        "the forkserver"
    };
    line(
        "parent",
        format!(
            "{label}: {} ms for start + join; the child's getppid() = {} ({forker}), \
             parent_process() = the tour",
            ms(took),
            report.ppid
        ),
    );
    line(
        "parent",
        format!("  its command line: {:?}", report.cmdline.join(" ")),
    );
    match method {
        StartMethod::Fork => {
            ensure!(
                report.found == 2,
                "a forked child should find the tour's a = 2, found {}",
                report.found
            );
            ensure!(report.ppid == tour.as_raw(), "the tour forked it");
            line(
                "parent",
                "  it found a = 2, the tour's value at the fork: a copy of this process, mid-run",
            );
        }
        StartMethod::Spawn | StartMethod::ForkServer => {
            ensure!(
                report.found == 1,
                "a {method} child is a fresh start of the program and should find a = 1, \
                 found {}",
                report.found
            );
            line(
                "parent",
                "  it found a = 1, as the program starts: a fresh program whose main() never \
                 ran; it only called fun()",
            );
        }
    }
    let mut started_now = false;
    match method {
        StartMethod::Spawn => {
            ensure!(
                report.ppid == tour.as_raw(),
                "the tour started the spawned child"
            );
        }
        StartMethod::ForkServer => {
            ensure!(
                report.ppid != tour.as_raw(),
                "a forkserver child is forked by the server, not the tour"
            );
            let server = Pid::from_raw(report.ppid).context("a forkserver pid")?;
            started_now = !before.contains(&server) && live_children()?.contains(&server);
            line(
                "parent",
                if started_now {
                    format!(
                        "  this call started the forkserver (pid {server}), a child of the \
                         tour that stays for the next ones"
                    )
                } else {
                    format!("  the forkserver (pid {server}) was already running: no start-up")
                },
            );
        }
        StartMethod::Fork => {}
    }
    Ok((took, started_now))
}

/// Milliseconds, with a decimal.
fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A helper thread that parks until stopped: it makes the tour a
/// multi-threaded program. Dropping it stops and joins the thread.
struct Helper {
    /// Set to ask the thread to leave.
    stop: Arc<AtomicBool>,
    /// The thread, until joined.
    handle: Option<JoinHandle<()>>,
    /// How many threads the process ran before.
    before: usize,
}

impl Helper {
    /// Starts the thread.
    fn start() -> Result<Helper> {
        let before = os::thread_count()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("tour-helper".into())
            .spawn(move || {
                // Bounded parks: the thread leaves even if an unpark is lost.
                while !flag.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
            })
            .context("cannot start a thread")?;
        Ok(Helper {
            stop,
            handle: Some(handle),
            before,
        })
    }

    /// Stops the thread, joins it, and waits (at most [`BOUND`]) until the
    /// kernel no longer counts it.
    fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            if handle.join().is_err() {
                bail!("the helper thread panicked");
            }
        }
        let deadline = Instant::now() + BOUND;
        while os::thread_count()? > self.before {
            ensure!(
                Instant::now() < deadline,
                "the helper thread is still counted after {BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The reference's example under each start method, the default, fork
/// with threads, and registered tasks.
pub(crate) fn run() -> Result<()> {
    explain(
        "A start method is how the child process comes to be. fork: the child is a copy of \
         the parent at that moment, every variable included. spawn: the program is started \
         again from scratch and only runs the function (Python starts a fresh interpreter \
         that imports the main module). forkserver: a clean helper process, started once \
         the same way as spawn, forks each child on request. A function that captures \
         nothing runs under all three; brood sends it by address, the arguments and the \
         value through the codec.",
    );
    kit::reference_says(
        "§5 (its notes; its example is in topic `process`)",
        reference::PROCESS_NOTES,
        "a = 1\n\
         def fun():\n\
         \x20   global a\n\
         \x20   print(\"子进程事件\", os.getpid(), \"found a =\", a); a = 10000\n\
         if __name__ == \"__main__\":\n\
         \x20   a = 2                       # changed at run time\n\
         \x20   for method in (\"fork\", \"spawn\", \"forkserver\"):\n\
         \x20       p = mp.get_context(method).Process(target=fun)\n\
         \x20       p.start(); p.join()",
    );
    kit::rust(
        "for method in StartMethod::ALL {\n\
         \x20   let mut p = Context::new(method).builder().target(fun);\n\
         \x20   // or Process::builder().start_method(method).target(fun)\n\
         \x20   p.start()?; let report = p.join()?;\n\
         }",
    );
    A.store(2, Ordering::SeqCst);
    let mut times = Vec::new();
    for (method, label) in [
        (StartMethod::Fork, "fork"),
        (StartMethod::Spawn, "spawn"),
        (StartMethod::ForkServer, "forkserver"),
        (StartMethod::ForkServer, "forkserver, again"),
    ] {
        let (took, started) = run_under(method, label)?;
        let with = if started {
            " (with the server's start)"
        } else {
            ""
        };
        times.push(format!("{label} {} ms{with}", ms(took)));
    }
    let a = A.load(Ordering::SeqCst);
    line(
        "parent",
        format!("here a = {a}: each child changed its own copy"),
    );
    ensure!(a == 2, "the tour's a should still be 2, is {a}");
    line("parent", format!("start + join: {}", times.join("; ")));
    println!();
    kit::correction(
        "its first note, that the child copies all of the parent's memory, holds for fork \
         only: a spawn or forkserver child is a fresh start of the program and found a = 1, \
         not the 2 the tour had set. (Its last note, that the child cannot print, is \
         corrected in topic `process`: every child above printed its own line.)",
    );
    explain(
        "fork is cheapest (copy-on-write pages, no program start); spawn pays for starting \
         the program; forkserver pays that once, when the server starts (the first use in \
         this program), and then a fork of a small process plus two messages per child.",
    );

    // The default.
    explain(
        "get_start_method() is the default, forkserver, as in Python 3.14 on Linux (before \
         3.14, Python's default was fork). set_start_method(method, force) changes it once; \
         asking for it fixes it, as in Python.",
    );
    python("mp.get_start_method()   # 'forkserver'");
    let default = brood::get_start_method();
    line("parent", format!("brood::get_start_method() = {default}"));
    ensure!(
        default == StartMethod::ForkServer,
        "the default should be forkserver, is {default}"
    );
    println!();

    // Fork with threads.
    explain(
        "Why not fork by default? In a program that runs threads, a fork copies only the \
         calling thread: a lock another thread held at that moment (stdout's, the \
         allocator's, one of yours) stays locked in the child forever, and the child can \
         hang on its first print. Python 3.12+ only warns (DeprecationWarning: \"This \
         process (pid=...) is multi-threaded, use of fork() may lead to deadlocks in the \
         child.\"). \
         brood refuses to fork a capturing closure then, and forks a function that \
         captures nothing from the single-threaded forkserver instead.",
    );
    let mut helper = Helper::start()?;
    line(
        "parent",
        format!(
            "started a helper thread that parks: this process now runs {} threads",
            os::thread_count()?
        ),
    );
    let greeting = String::from("a capturing closure");
    let mut closure = Guarded(Process::fork(move || greeting.len()));
    kit::flush();
    match closure.start() {
        Ok(()) => {
            let _ = closure.join_timeout(BOUND);
            bail!("Process::fork(capturing closure) started though another thread runs");
        }
        Err(e) if e.kind() == ErrorKind::ForkWithThreads => {
            line_wrapped(
                "parent",
                "Process::fork(move || greeting.len()).start() -> Err(ForkWithThreads):",
                &e.to_string(),
            );
        }
        Err(e) => bail!("expected a ForkWithThreads error, got: {e}"),
    }
    let mut routed = Guarded(Context::new(StartMethod::Fork).builder().target(fun));
    kit::flush();
    routed.start()?;
    let report = routed.join_timeout(BOUND)?;
    let used = routed.start_method();
    line(
        "parent",
        format!(
            "a function that captures nothing, asked to start with fork: started with {}, \
             found a = {}",
            used.map_or_else(|| "?".into(), |m| m.to_string()),
            report.found
        ),
    );
    ensure!(
        used == Some(StartMethod::ForkServer) && report.found == 1,
        "with threads running, a fork of a capture-free function should go through the \
         forkserver (got {used:?}, a = {})",
        report.found
    );
    helper.stop()?;
    line(
        "parent",
        format!(
            "stopped the helper thread: {} thread again",
            os::thread_count()?
        ),
    );
    let greeting = String::from("a capturing closure");
    let mut closure = Guarded(Process::fork(move || greeting.len()));
    kit::flush();
    closure.start()?;
    let len = closure.join_timeout(BOUND)?;
    line(
        "parent",
        format!("Process::fork(move || greeting.len()) now forks, and returned {len}"),
    );
    println!();

    // Registered tasks.
    explain(
        "Python's spawn and forkserver send the function by name (pickle writes \
         module.function, the child imports it). brood's #[brood::task] registers a function \
         under its path, so a child -- or another build of the program -- can call it by \
         name; an unknown name is an UnknownTask error from start(), before any process \
         exists.",
    );
    code(
        "Rust",
        "#[brood::task]\n\
         fn greet(who: String, times: u32) -> String { .. }\n\
         Process::builder().task::<String, _>(concat!(module_path!(), \"::greet\"), (who, 2))",
    );
    let name = concat!(module_path!(), "::greet");
    let ours: Vec<&str> = brood::task::registered()
        .filter(|n| n.starts_with(module_path!()))
        .collect();
    line(
        "parent",
        format!("brood::task::registered() here: {ours:?}"),
    );
    let mut task = Guarded(
        Process::builder()
            .name("greeter")
            .task::<String, _>(name, ("tour".to_string(), 2u32)),
    );
    kit::flush();
    task.start()?;
    let got = task.join_timeout(BOUND)?;
    line("parent", format!("task {name:?} returned {got:?}"));
    ensure!(
        got.starts_with("hello tour, hello tour (from pid"),
        "unexpected value from the task: {got:?}"
    );
    let mut unknown =
        Process::builder().task::<String, _>(concat!(module_path!(), "::no_such_task"), ());
    match unknown.start() {
        Ok(()) => {
            let _ = unknown.join_timeout(BOUND);
            bail!("a task that does not exist started");
        }
        Err(e) if e.kind() == ErrorKind::UnknownTask => {
            line_wrapped(
                "parent",
                "an unknown name: start() -> Err(UnknownTask):",
                &e.to_string(),
            );
        }
        Err(e) => bail!("expected an UnknownTask error, got: {e}"),
    }
    ensure!(
        brood::active_children().is_empty(),
        "every child should be joined"
    );
    Ok(())
}
