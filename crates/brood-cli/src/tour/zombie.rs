//! Zombies: a child that exited and that its parent has not yet waited for.

use std::io;

use anyhow::{Result, ensure};
use brood::os::{self, ProcInfo, ProcState, WaitFlags, proc};

use super::kit::{self, Kid, explain, line, show};
use super::reference;

/// The tour's Python for §4.2, which shows no code.
const PYTHON: &str = "pid = os.fork()\n\
if pid == 0: os._exit(0)\n\
sleep(1)                          # the child is now <defunct>, Z\n\
os.system(f\"ps -o pid,ppid,stat,cmd -p {pid}\")\n\
os.kill(pid, signal.SIGKILL)      # nothing happens: it is already dead\n\
os.waitpid(pid, 0)                # reaped: gone";

/// What this topic runs, in short.
const RUST: &str = "let child = kit::fork_raw(|| 0)?;             // exits at once\n\
PidFd::open(child)?.wait_timeout(Some(BOUND))?;  // it has exited; nobody reaped it\n\
ProcInfo::read(child)?.state                     // ProcState::Zombie: Z\n\
brood::os::kill(child, libc::SIGKILL)?;          // still Z\n\
brood::os::waitpid(Some(child), WaitFlags::NOHANG)?;   // reaped: /proc/PID is gone";

/// Forks a child that exits at once, shows it as `Z` without reaping it,
/// shows that even SIGKILL does not remove it, then reaps it.
pub(crate) fn run() -> Result<()> {
    explain(
        "When a process exits, the kernel frees its memory and files but keeps a small \
         record -- its pid, its exit status, its CPU times -- until the parent collects the \
         status with wait() or waitpid(). In between, the process is a zombie: Z in ps, \
         <defunct> in `ps aux`. A zombie runs no code and uses no memory to speak of, but it \
         holds its pid; a parent that forks in a loop and never waits fills the pid table. \
         Here the child exits at once and the tour deliberately does not wait.",
    );
    kit::reference_says("§4.2, which shows no code", reference::ZOMBIE, PYTHON);
    kit::rust(RUST);
    let me = os::getpid();
    let mut kid = Kid::fork(|| 0)?;
    let pid = kid.pid();
    // Wait until it has exited, through its pidfd: that does not reap it.
    kid.wait_exit()?;
    let info = ProcInfo::read(pid)?;
    show(&[&info]);
    ensure!(
        info.state == ProcState::Zombie,
        "the exited, unreaped child should be Z, is {}",
        info.stat()
    );
    ensure!(
        info.ppid == me.as_raw(),
        "the zombie's parent should be the tour"
    );
    line(
        "parent",
        format!(
            "Z: {}. Its command line is gone ([{}]); only the record is left",
            info.state.meaning(),
            info.name
        ),
    );
    let listed = proc::children(me)?
        .iter()
        .any(|c| c.pid == pid && c.state == ProcState::Zombie);
    ensure!(
        listed,
        "the zombie should be listed among the tour's children"
    );
    line(
        "parent",
        "it is still listed among the tour's children (brood::os::proc::children)",
    );

    // A zombie cannot be killed: it is already dead.
    os::kill(pid, libc::SIGKILL)?;
    let after = ProcInfo::read(pid)?;
    ensure!(
        after.state == ProcState::Zombie,
        "SIGKILL should not change a zombie, it is now {}",
        after.stat()
    );
    line(
        "parent",
        format!(
            "kill -9 {pid}: still {}. A zombie is already dead; signals do nothing, only \
             its parent's wait() removes it",
            after.stat()
        ),
    );

    // Reap it.
    let status = kit::reap_exited(pid, WaitFlags::empty())?;
    kid.reaped_elsewhere();
    line(
        "parent",
        format!("os::waitpid({pid}, WNOHANG) -> {status}: the status is collected"),
    );
    let gone = matches!(ProcInfo::read(pid), Err(e) if e.kind() == io::ErrorKind::NotFound);
    ensure!(gone, "/proc/{pid} should be gone after the reap");
    line(
        "parent",
        format!("/proc/{pid} is gone: the zombie was reaped, its pid is free again"),
    );
    println!();
    explain(
        "How to avoid zombies (the tutorial's list, with brood's names): wait for every \
         child -- os::wait / os::waitpid (topic `wait`); have a parent that outlives nobody \
         -- the double fork, whose grandchild init adopts and reaps (topic `double-fork`, \
         brood::os::daemonize); or tell the kernel to reap children itself by ignoring \
         SIGCHLD (topic `sigchld`). brood::Process reaps its child in join(), and a \
         Process dropped without join is reaped by brood as soon as it exits.",
    );
    Ok(())
}
