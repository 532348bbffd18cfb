//! `wait()` and `waitpid()`: collecting a child's exit status, decoded.

use anyhow::{Result, bail, ensure};
use brood::os::{self, ExitStatus, WaitFlags};

use super::kit::{self, Kid, explain, line};
use super::reference;

/// The reference's example, as this topic runs it.
const RUST: &str = "match unsafe { brood::os::fork() }? {\n\
\x20   ForkResult::Child => {\n\
\x20       println!(\"Child process {}\", brood::os::getpid());\n\
\x20       brood::os::exit_now(1)                       // sys.exit(1)\n\
\x20   }\n\
\x20   ForkResult::Parent { .. } => {\n\
\x20       let (pid, status) = brood::os::wait()?;     // 阻塞等待子进程退出\n\
\x20       println!(\"pid :  {pid}\");\n\
\x20       println!(\"status: {}\", status.code().unwrap());   // os.WEXITSTATUS: 1\n\
\x20   }\n\
}";

/// The tutorial's example (a child exits with 1, `os.wait()` reads it), a
/// child killed by a signal, `WNOHANG`, and `ECHILD`.
pub(crate) fn run() -> Result<()> {
    explain(
        "wait() blocks until any child exits, reaps it, and returns its pid and status; \
         waitpid(pid, flags) does it for one child, and with WNOHANG returns at once if it \
         is still running. The raw status packs how it ended into one integer; brood \
         decodes it into ExitStatus: Exited(code) (Python: os.WIFEXITED / \
         os.WEXITSTATUS) or Signaled { signal, .. } (os.WIFSIGNALED / os.WTERMSIG). \
         The tour never blocks blindly: it first waits on the child's pidfd with a time \
         limit, so each wait() below returns at once.",
    );
    kit::reference("§4.3", reference::WAIT);
    kit::rust(RUST);
    // The tutorial's example.
    let mut kid = Kid::fork(|| {
        line("child", format!("Child process {}", os::getpid()));
        1
    })?;
    kid.wait_exit()?;
    let (pid, status) = os::wait()?;
    if pid != kid.pid() {
        bail!("os::wait() reaped {pid}, not the child {}", kid.pid());
    }
    kid.reaped_elsewhere();
    line("parent", format!("pid :  {pid}"));
    line(
        "parent",
        format!(
            "status: {}",
            status.code().map_or_else(|| "?".into(), |c| c.to_string())
        ),
    );
    line(
        "parent",
        format!("  (os::wait() -> ({pid}, {status:?}): {status})"),
    );
    line(
        "parent",
        format!(
            "  WIFEXITED: {}, WEXITSTATUS: {:?} (status.code()), exitcode(): {:?}",
            status.code().is_some(),
            status.code(),
            status.exitcode()
        ),
    );
    ensure!(
        status == ExitStatus::Exited(1),
        "expected exit code 1, got {status}"
    );
    println!();
    kit::correction(
        "its parent ends with `while True: pass`, which spins at 100% of a CPU for ever \
         (stop it with Ctrl-C); the tour's parent goes on. Its `if pid < 0` branch cannot \
         run: a failed os.fork() raises OSError.",
    );

    // Killed by a signal, and WNOHANG while it runs.
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut kid = Kid::fork(|| {
            std::thread::sleep(super::kit::BOUND);
            0
        })?;
        let pid = kid.pid();
        let early = os::waitpid(Some(pid), WaitFlags::NOHANG)?;
        line(
            "parent",
            format!(
                "child {pid} sleeps; waitpid({pid}, WNOHANG) -> {early:?} (Python: (0, 0)): \
                 still running"
            ),
        );
        ensure!(early.is_none(), "the sleeping child should not have exited");
        kid.signal(signal)?;
        let status = kid.join()?;
        line(
            "parent",
            format!(
                "sent {}; waitpid({pid}) -> {status:?}: {status}",
                os::signal_name(signal)
            ),
        );
        line(
            "parent",
            format!(
                "  WIFSIGNALED: {}, WTERMSIG: {:?} (status.signal()), exitcode(): {:?} \
                 (Python's Process.exitcode: minus the signal)",
                status.signal().is_some(),
                status.signal(),
                status.exitcode()
            ),
        );
        ensure!(
            status.signal() == Some(signal) && status.exitcode() == Some(-signal),
            "expected death by {}, got {status}",
            os::signal_name(signal)
        );
    }
    println!();

    // No children at all: ECHILD. Asked in a fresh child, which has none.
    let mut kid = Kid::fork(|| match os::wait() {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
            line(
                "child",
                format!("I have no children: os::wait() -> Err({e})"),
            );
            0
        }
        other => {
            line("child", format!("unexpected: os::wait() -> {other:?}"));
            1
        }
    })?;
    let status = kid.join()?;
    ensure!(
        status.success(),
        "wait() without children should fail with ECHILD"
    );
    line(
        "parent",
        "wait() with no child to wait for fails at once with ECHILD (Python: \
         ChildProcessError) instead of blocking",
    );
    Ok(())
}
