//! Ignoring `SIGCHLD` (`brood::os::ignore_children`): the kernel reaps the
//! children, and nobody can wait for them any more.

use std::time::Duration;

use anyhow::{Result, ensure};
use brood::os::{self, ExitStatus, ProcInfo, ProcState, WaitFlags, proc};

use super::kit::{self, DefaultChildren, Kid, explain, line, show};
use super::reference;

/// The reference's line, and what this topic checks, in Rust.
const RUST: &str = "brood::os::ignore_children()?;   // signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n\
let child = kit::fork_raw(|| 0)?;\n\
// it exits, and the kernel reaps it at once: no zombie\n\
brood::os::waitpid(Some(child), WaitFlags::empty())   // Err(ECHILD): its status is gone\n\
brood::os::default_children()?;  // signal.signal(signal.SIGCHLD, signal.SIG_DFL)";

/// Ignores `SIGCHLD`, forks a child that exits: no zombie, `ECHILD`. Then
/// restores the default: the next child is a zombie until reaped.
pub(crate) fn run() -> Result<()> {
    explain(
        "When a child exits, the kernel sends its parent SIGCHLD. Its default action is to \
         do nothing, and the child waits as a zombie to be reaped. If the parent sets the \
         action to SIG_IGN, the kernel reaps every child itself the moment it exits: no \
         zombie ever appears, and the parent does not have to call wait() -- it cannot: \
         wait() fails with ECHILD, and the exit status is lost. It covers all children at \
         once and never blocks the parent. brood::os::ignore_children() sets it, \
         brood::os::default_children() undoes it (brood::Process needs the default to \
         read its children's status).",
    );
    kit::reference("§4.3", reference::SIGCHLD);
    kit::rust(RUST);
    let me = os::getpid();
    let _restore = DefaultChildren;
    os::ignore_children()?;
    line("parent", "os::ignore_children(): SIGCHLD is now SIG_IGN");
    // The child waits for the tour's "go" before it exits: with SIGCHLD
    // ignored, a child that exits at once can be reaped by the kernel before
    // the tour has opened its pidfd.
    let (go_r, go_w) = kit::pipe()?;
    let mut kid = Kid::fork(|| {
        kit::close_in_child(&go_w);
        kit::wait_for_go(&go_r);
        0
    })?;
    drop(go_r);
    drop(go_w);
    let pid = kid.pid();
    kid.wait_exit()?;
    let gone = kit::wait_gone(pid, Duration::from_secs(2));
    ensure!(
        gone,
        "with SIGCHLD ignored the kernel should have reaped {pid}, but /proc still has it ({})",
        ProcInfo::read(pid).map_or_else(|_| "?".into(), |p| p.stat())
    );
    kid.reaped_elsewhere();
    line(
        "parent",
        format!(
            "child {pid} exited and /proc/{pid} vanished by itself: reaped by the kernel, \
             never a zombie"
        ),
    );
    let err = os::waitpid(Some(pid), WaitFlags::empty());
    ensure!(
        matches!(&err, Err(e) if e.raw_os_error() == Some(libc::ECHILD)),
        "waitpid should fail with ECHILD, got {err:?}"
    );
    line(
        "parent",
        format!(
            "os::waitpid({pid}) -> {}: its exit status is gone for good",
            err.unwrap_err()
        ),
    );
    // wait() for any child would block until every child exits: ask only
    // when the tour has none (it may have a forkserver from `process`).
    if proc::children(me)?.is_empty() {
        let err = os::wait();
        ensure!(
            matches!(&err, Err(e) if e.raw_os_error() == Some(libc::ECHILD)),
            "wait should fail with ECHILD, got {err:?}"
        );
        line("parent", format!("os::wait() -> {}", err.unwrap_err()));
    }
    println!();

    os::default_children()?;
    line(
        "parent",
        "os::default_children(): SIGCHLD is back to SIG_DFL",
    );
    let mut kid = Kid::fork(|| 5)?;
    let pid = kid.pid();
    kid.wait_exit()?;
    let info = ProcInfo::read(pid)?;
    show(&[&info]);
    ensure!(
        info.state == ProcState::Zombie,
        "with the default action the exited child should be a zombie, is {}",
        info.stat()
    );
    let status = kid.join()?;
    line(
        "parent",
        format!("a zombie again, until waitpid({pid}) -> {status}: the status can be read"),
    );
    ensure!(
        status == ExitStatus::Exited(5),
        "expected exit code 5, got {status}"
    );
    Ok(())
}
