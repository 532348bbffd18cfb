//! `brood::Process`, Python's `multiprocessing.Process`: the same verbs, and
//! `join` hands back what the function returned.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use brood::{Process, os};

use super::kit::{self, BOUND, Guarded, code, explain, line, line_from, name_of, python};
use super::reference;

/// The reference's example, as this topic runs it.
const RUST: &str = "static A: AtomicI32 = AtomicI32::new(1);          // a = 1\n\
let mut p = Process::builder().name(\"worker\").target(|| {   // mp.Process(target = fun)\n\
\x20   sleep(50 ms);\n\
\x20   println!(\"子进程事件 {}\", brood::os::getpid());\n\
\x20   A.store(10000, SeqCst);                        // global a; a = 10000\n\
\x20   println!(\"a =  {}\", A.load(SeqCst));\n\
});\n\
p.start()?;                                        // 启动进程\n\
p.join()?;                                         // 回收进程\n\
println!(\"这是父进程\");\n\
println!(\"parent a: {}\", A.load(SeqCst));         // 1";

/// The tutorial's global `a`: 1 in the parent; a child sets its own copy.
static A: AtomicI32 = AtomicI32::new(1);

/// What the worker reports: its pid, its getppid(), its `a`, its name, and
/// the pid of the process brood says started it.
type Report = (i32, i32, i32, String, Option<i32>);

/// The tutorial's `Process(target=fun)` example, then daemon and terminate,
/// a panicking child, and `join_timeout`.
pub(crate) fn run() -> Result<()> {
    explain(
        "multiprocessing.Process wraps the fork/wait dance: put the work in a function, \
         create a Process with it, start() it, join() it. brood::Process has the same \
         verbs -- start, join, join_timeout, is_alive, pid, name, daemon, exitcode, \
         terminate, kill, close -- and join() returns the function's value (Python's \
         returns None). A function that captures nothing (Process::new, \
         Process::builder().target) runs under any start method; a capturing closure \
         (Process::fork) needs a fork.",
    );
    kit::reference("§5", reference::PROCESS);
    kit::rust(RUST);
    let tour = os::getpid();
    let mut p = Process::builder().name("worker").target(|| -> Report {
        std::thread::sleep(Duration::from_millis(50));
        line("child", format!("子进程事件 {}", os::getpid()));
        A.store(10_000, Ordering::SeqCst);
        line("child", format!("a =  {}", A.load(Ordering::SeqCst)));
        (
            os::getpid().as_raw(),
            os::getppid().as_raw(),
            A.load(Ordering::SeqCst),
            brood::current_process().name,
            brood::parent_process().map(|p| p.pid.as_raw()),
        )
    });
    line(
        "parent",
        format!(
            "before start: name() = {:?}, pid() = {:?}, is_alive() = {}, exitcode() = {:?}",
            p.name(),
            p.pid(),
            p.is_alive(),
            p.exitcode()
        ),
    );
    p.start()?;
    let pid = p.pid().context("a started process has a pid")?;
    line(
        "parent",
        format!(
            "after start: pid() = {pid}, is_alive() = {}, start method {} (Python 3.14's \
             default on Linux too)",
            p.is_alive(),
            p.start_method()
                .map_or_else(|| "?".into(), |m| m.to_string())
        ),
    );
    let (cpid, cppid, ca, cname, cparent) = p.join_timeout(BOUND)?;
    line("parent", "这是父进程");
    line("parent", format!("parent a: {}", A.load(Ordering::SeqCst)));
    line(
        "parent",
        format!("join_timeout({BOUND:?}) returned the worker's value:"),
    );
    line(
        "parent",
        format!("  its pid {cpid}, its a = {ca}, current_process().name = {cname:?}"),
    );
    let a = A.load(Ordering::SeqCst);
    line(
        "parent",
        format!(
            "here a = {a}: the child changed its own copy. exitcode() = {:?}, is_alive() = {}",
            p.exitcode(),
            p.is_alive()
        ),
    );
    ensure!(a == 1 && ca == 10_000, "a: parent {a}, child {ca}");
    ensure!(
        cpid == pid.as_raw(),
        "the worker's pid is {cpid}, pid() said {pid}"
    );
    ensure!(cname == "worker", "the worker's name is {cname:?}");
    ensure!(
        cparent == Some(tour.as_raw()),
        "parent_process() in the worker should be the tour, is {cparent:?}"
    );
    ensure!(p.exitcode() == Some(0), "exitcode should be 0");
    if cppid == tour.as_raw() {
        line(
            "parent",
            "its getppid() is the tour: it was forked from here",
        );
    } else {
        line(
            "parent",
            format!(
                "its getppid() is {cppid} ({}): the forkserver, a clean helper process, \
                 forked it; brood::parent_process() still names the tour",
                name_of(os::Pid::from_raw(cppid).unwrap_or(tour))
            ),
        );
    }
    println!();
    kit::correction(
        "its last note, 「multiprocessing创建的子进程无法使用ptint」 (a child made by \
         multiprocessing cannot print), is wrong: the child above printed 子进程事件 and \
         a =  10000 itself, to the same terminal, as Python's child does. Its first note, \
         that the child copies all of the parent's memory, holds only for the fork start \
         method (topic start-methods). And the reference prints 这是父进程 before join(), \
         after sleep(3), so its order rests on the sleeps; the tour joins first.",
    );
    let greeting = String::from("a capturing closure");
    let mut f = Process::fork(move || greeting.len());
    f.start()?;
    let len = f.join_timeout(BOUND)?;
    line(
        "parent",
        format!(
            "Process::fork(move || greeting.len()) ran in a forked child ({}) and returned {len}",
            f.start_method()
                .map_or_else(|| "?".into(), |m| m.to_string())
        ),
    );
    println!();

    // Daemon, terminate, exitcode.
    explain(
        "daemon=True: a daemon child is not waited for at exit -- it is terminated when its \
         parent exits (brood also kills it if the parent dies abruptly), and it may not \
         start children. terminate() sends SIGTERM (kill() sends SIGKILL); exitcode is then \
         minus the signal number.",
    );
    kit::reference_says(
        "§5.1",
        reference::PROCESS_ATTRS,
        "d = mp.Process(target=sleep, args=(10,), daemon=True)\n\
         d.start(); d.terminate(); d.join()\n\
         print(d.exitcode)   # -15",
    );
    kit::rust(
        "let mut d = Process::builder().name(\"sleeper\").daemon(true)   // before start()\n\
         \x20   .target(|| std::thread::sleep(BOUND));\n\
         d.start()?;\n\
         (d.name(), d.pid(), d.is_alive(), d.is_daemon())   // p.name, p.pid, p.is_alive(), p.daemon\n\
         d.terminate()?;                                  // SIGTERM\n\
         d.join()                                         // Err: killed by SIGTERM; d.exitcode() == Some(-15)",
    );
    kit::correction(
        "如果等于True则子进程会随父进程的退出而结束 (a daemon child ends when its parent \
         exits) holds when the parent exits normally: Python terminates its daemon children \
         in an exit hook, so a parent killed by SIGKILL leaves them running. brood's daemon \
         children die with their parent either way.",
    );
    let mut d = Process::builder()
        .name("sleeper")
        .daemon(true)
        .target(|| std::thread::sleep(BOUND));
    d.start()?;
    let listed: Vec<String> = brood::active_children()
        .into_iter()
        .map(|c| {
            format!(
                "{} ({}{})",
                c.name,
                c.pid,
                if c.daemon { ", daemon" } else { "" }
            )
        })
        .collect();
    line(
        "parent",
        format!(
            "started {:?}: is_daemon() = {}, is_alive() = {}; active_children() = [{}]",
            d.name(),
            d.is_daemon(),
            d.is_alive(),
            listed.join(", ")
        ),
    );
    d.terminate()?;
    match d.join_timeout(BOUND) {
        Ok(()) => bail!("the terminated daemon returned normally"),
        Err(e) if e.is_timeout() => {
            let _ = d.kill();
            bail!("the daemon outlived SIGTERM: {e}");
        }
        Err(e) => {
            line("parent", format!("terminate(); join_timeout() -> Err: {e}"));
            ensure!(
                e.signal() == Some(libc::SIGTERM),
                "expected death by SIGTERM: {e}"
            );
        }
    }
    line(
        "parent",
        format!(
            "exitcode() = {:?}, is_alive() = {}",
            d.exitcode(),
            d.is_alive()
        ),
    );
    ensure!(
        d.exitcode() == Some(-libc::SIGTERM),
        "exitcode should be -15"
    );
    println!();

    // A panicking child.
    panicking_child()?;
    println!();

    // join with a timeout.
    explain(
        "join(timeout) in Python returns None after the timeout whether or not the child \
         ended, and you check is_alive(). brood's join_timeout() returns a Timeout error \
         while the child runs, and leaves it running: join again later, or kill it.",
    );
    python(
        "p.join(0.1)\n\
         if p.is_alive(): p.kill(); p.join()",
    );
    let mut slow = Process::builder().name("slow").target(|| {
        std::thread::sleep(BOUND);
        7
    });
    slow.start()?;
    let early = slow.join_timeout(Duration::from_millis(100));
    match &early {
        Err(e) if e.is_timeout() => line(
            "parent",
            format!(
                "join_timeout(100ms) -> Err: {e}; is_alive() = {}",
                slow.is_alive()
            ),
        ),
        other => {
            let _ = slow.kill();
            bail!("expected a timeout, got {other:?}");
        }
    }
    slow.kill()?;
    let err = match slow.join_timeout(BOUND) {
        Ok(v) => bail!("the killed child returned {v}"),
        Err(e) => e,
    };
    line(
        "parent",
        format!(
            "kill(); join_timeout() -> Err: {err}; exitcode() = {:?}",
            slow.exitcode()
        ),
    );
    ensure!(
        err.signal() == Some(libc::SIGKILL),
        "expected death by SIGKILL: {err}"
    );
    slow.close()?;
    let closed = slow.join_timeout(BOUND).unwrap_err();
    line(
        "parent",
        format!("close(); using it afterwards is an error: {closed}"),
    );
    ensure!(
        brood::active_children().is_empty(),
        "every child should be joined"
    );
    line(
        "parent",
        format!(
            "active_children() = [] at the end; cpu_count() = {}",
            brood::cpu_count()
        ),
    );
    Ok(())
}

/// A child that panics: its stderr goes into a pipe the tour reads, and is
/// printed labelled, without the backtrace `RUST_BACKTRACE=1` adds.
fn panicking_child() -> Result<()> {
    explain(
        "When the function fails, Python's child prints a traceback on its stderr and \
         join() returns None with exitcode 1: the parent has to guess what happened. \
         brood's child prints the panic message on its stderr too, and join() returns an \
         error that carries the message and where it happened. Here the child's stderr \
         goes into a pipe the tour reads, so each line is shown labelled, and a backtrace \
         (printed when RUST_BACKTRACE=1 is set) is counted, not shown.",
    );
    python(
        "def fun(): raise RuntimeError(\"no luck today\")\n\
         p = mp.Process(target=fun, name=\"unlucky\"); p.start(); p.join()\n\
         # the child prints: Process unlucky: Traceback ... RuntimeError: no luck today\n\
         print(p.exitcode)   # 1",
    );
    code(
        "Rust",
        "let mut p = Process::builder().name(\"unlucky\").fork(|| -> u32 { panic!(\"no luck today\") });\n\
         p.start()?;\n\
         let err = p.join().unwrap_err();   // err.panic(): the message and its location",
    );
    let (err_r, err_w) = kit::pipe()?;
    let raw = err_w.as_raw_fd();
    let mut bad = Guarded(Process::builder().name("unlucky").fork(move || -> u32 {
        // SAFETY: in the forked child: fd 2 becomes a copy of the
        // pipe's write end, which is open (inherited at the fork).
        unsafe { libc::dup2(raw, libc::STDERR_FILENO) };
        panic!("no luck today")
    }));
    kit::flush();
    bad.start()?;
    // The child holds its own copy: end of file comes when it exits.
    drop(err_w);
    let err = match bad.join_timeout(BOUND) {
        Ok(v) => bail!("the panicking child returned {v}"),
        Err(e) => e,
    };
    let pid = bad.pid().context("a started process has a pid")?;
    let stderr = String::from_utf8_lossy(&kit::read_all(&err_r)?).into_owned();
    let mut backtrace = 0;
    for l in stderr.lines() {
        if backtrace > 0 || l.starts_with("stack backtrace") {
            backtrace += 1;
        } else if !l.trim().is_empty() {
            line_from("stderr", pid, l);
        }
    }
    if backtrace > 0 {
        line(
            "parent",
            format!(
                "(and {} lines of backtrace, printed because RUST_BACKTRACE is set: left out)",
                backtrace - 1
            ),
        );
    }
    ensure!(
        stderr.contains("no luck today"),
        "the child's stderr should carry the panic message, got {stderr:?}"
    );
    // The error's first line: its Display adds the backtrace when there is one.
    let first = err.to_string();
    let first = first.lines().next().unwrap_or_default();
    line("parent", format!("join_timeout() -> Err: {first}"));
    let report = err.panic().context("the error should carry the panic")?;
    line(
        "parent",
        format!(
            "  error.panic(): message {:?}, location {:?}; exitcode() = {:?}",
            report.message,
            report.location,
            bad.exitcode()
        ),
    );
    ensure!(
        report.message == "no luck today",
        "wrong panic message {:?}",
        report.message
    );
    Ok(())
}
