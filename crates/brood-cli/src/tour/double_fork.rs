//! The double fork (`brood::os::daemonize`): a grandchild nobody has to
//! wait for.

use std::panic::{self, AssertUnwindSafe};

use anyhow::{Context, Result, ensure};
use brood::os::{self, Daemonized, Pid, ProcInfo};

use super::kit::{self, Kid, explain, line, name_of, show_adopted};
use super::reference;

/// The reference's example, as this topic runs it.
const RUST: &str = "match unsafe { brood::os::daemonize() }? {     // fork, setsid, fork, _exit\n\
\x20   Daemonized::Daemon => {                         // 二级子进程\n\
\x20       println!(\"第二件事情\");                   // fun2()\n\
\x20       brood::os::exit_now(0)\n\
\x20   }\n\
\x20   Daemonized::Parent { daemon } => {              // the middle process is reaped already\n\
\x20       println!(\"第一件事情\");                   // fun1()\n\
\x20   }\n\
}";

/// Daemonizes a grandchild, shows it adopted and in its own session, lets
/// it do its work while the tour does its own, and sees it reaped by its
/// adopter.
pub(crate) fn run() -> Result<()> {
    explain(
        "The tutorial's \"second-level child\": the parent forks a child and waits for it; \
         the child forks a grandchild and exits at once, so the wait is short; the \
         grandchild, now an orphan, is adopted by init, which reaps it when it ends. The \
         parent and the grandchild then work side by side, and the parent never has to \
         wait for the grandchild or risk leaving it a zombie. brood::os::daemonize does \
         exactly this, and also starts a new session (setsid) in the middle process, so \
         the grandchild has no controlling terminal -- the classic daemon recipe.",
    );
    kit::reference("§4.3", reference::DOUBLE_FORK);
    kit::rust(RUST);
    let tour = os::getpid();
    // A subreaper tour would adopt the daemon itself (topic `orphan`).
    os::set_child_subreaper(false)?;
    let (report_r, report_w) = kit::pipe()?;
    let (go_r, go_w) = kit::pipe()?;
    kit::ensure_single_threaded()?;
    kit::flush();
    // SAFETY: the tour is single-threaded (checked above), so the grandchild
    // may run any code; it ends with exit_now below and never returns.
    let daemon = match unsafe { os::daemonize() }.context("daemonize failed")? {
        Daemonized::Daemon => {
            let code = panic::catch_unwind(AssertUnwindSafe(|| {
                kit::close_in_child(&go_w);
                kit::wait_for_go(&go_r);
                line("daemon", "第二件事情");
                line(
                    "daemon",
                    "  (the second thing: done by the grandchild, on its own)",
                );
                // SAFETY: getsid(0) takes no pointer and cannot fail for the caller.
                let sid = unsafe { libc::getsid(0) };
                let sent = kit::send(
                    &report_w,
                    &[os::getpid().as_raw(), os::getppid().as_raw(), sid],
                );
                i32::from(!sent)
            }))
            .unwrap_or(101);
            kit::flush();
            os::exit_now(code)
        }
        Daemonized::Parent { daemon } => daemon,
    };
    drop(report_w);
    drop(go_r);
    let watched = Kid::watch(daemon)?;
    line(
        "parent",
        format!(
            "daemonize() returned Daemonized::Parent {{ daemon: {daemon} }}; the middle \
             process has already exited and been reaped inside daemonize()"
        ),
    );
    let info = ProcInfo::read(daemon)?;
    show_adopted(&info);
    let tour_session = ProcInfo::read(tour)?.session;
    line(
        "parent",
        format!(
            "its parent is {} ({}), not the tour. Its session is {}, a new one: the middle \
             process called setsid() and led it, then exited. No terminal (TTY ?), and as it \
             does not lead its session it can never acquire one",
            info.ppid,
            Pid::from_raw(info.ppid).map_or_else(|| "?".into(), name_of),
            info.session
        ),
    );
    ensure!(
        info.ppid != tour.as_raw(),
        "the daemon should not be the tour's child"
    );
    ensure!(
        info.session != tour_session && info.session != daemon.as_raw() && info.tty_nr == 0,
        "the daemon should be in a new session it does not lead, without a terminal"
    );
    line("parent", "第一件事情");
    line(
        "parent",
        "  (the first thing: done by the parent, which never waits for the daemon; it \
         tells the daemon to go on only now, where the reference sleeps 3 s and 4 s)",
    );
    drop(go_w);
    let report = kit::recv(&report_r, 3)?;
    let adopter = Pid::from_raw(report[1]).context("bad ppid from the daemon")?;
    line(
        "parent",
        format!(
            "the daemon reported: my pid {}, my parent {} ({}), my session {}",
            report[0],
            adopter,
            name_of(adopter),
            report[2]
        ),
    );
    ensure!(
        report[0] == daemon.as_raw(),
        "the daemon reported another pid"
    );
    watched.wait_exit()?;
    kit::report_adopter_reap("the daemon", daemon, adopter);
    println!();
    kit::correction(
        "its `if pid < 0` and `if pid0 < 0` branches cannot run: a failed os.fork() raises \
         OSError. The order of the two lines it states holds only because fun1 sleeps 3 s \
         and fun2 4 s: the two processes run independently, and nothing else orders them.",
    );
    Ok(())
}
