//! `getpid()` and `getppid()` on both sides of a fork.

use anyhow::{Result, ensure};
use brood::os;

use super::kit::{self, Kid, explain, line, name_of};
use super::reference;

/// The reference's example, as this topic runs it.
const RUST: &str = "match unsafe { brood::os::fork() }? {\n\
\x20   ForkResult::Child => {\n\
\x20       println!(\"Child PID: {}\", brood::os::getpid());\n\
\x20       println!(\"Get parent PID: {}\", brood::os::getppid());\n\
\x20       brood::os::exit_now(0)\n\
\x20   }\n\
\x20   ForkResult::Parent { child } => {\n\
\x20       brood::os::waitpid(Some(child), WaitFlags::empty())?;   // the child prints first\n\
\x20       println!(\"Get child PID: {child}\");\n\
\x20       println!(\"Parent PID: {}\", brood::os::getpid());\n\
\x20   }\n\
}";

/// Forks; the child prints its pid and its parent's, the parent prints the
/// pid fork returned and its own; the child checks they agree.
pub(crate) fn run() -> Result<()> {
    explain(
        "Every process has a pid, a number the kernel hands out, unique among the processes \
         alive now (it is reused later). getpid() returns the caller's own, getppid() its \
         parent's: every process but the first has exactly one parent and any number of \
         children, which is what `pstree` draws. In brood: brood::os::getpid() and \
         brood::os::getppid(), or brood::current_process().pid.",
    );
    kit::reference("§3.1", reference::PIDS);
    kit::rust(RUST);
    let parent = os::getpid();
    let mut kid = Kid::fork(|| {
        let (me, up) = (os::getpid(), os::getppid());
        line("child", format!("Child PID: {me}"));
        line("child", format!("Get parent PID: {up}"));
        i32::from(up != parent || me == parent)
    })?;
    let child = kid.pid();
    let status = kid.join()?;
    line("parent", format!("Get child PID: {child}"));
    line("parent", format!("Parent PID: {parent}"));
    let grand = os::getppid();
    line(
        "parent",
        format!(
            "os::getppid() = {grand}: my own parent, {} (whoever started `brood`)",
            name_of(grand)
        ),
    );
    ensure!(
        status.success(),
        "the child saw pids that do not match the parent's: {status}"
    );
    line(
        "parent",
        format!(
            "they agree: the child's getppid() is the parent's getpid() ({parent}), and the \
             parent's fork() returned the child's getpid() ({child})"
        ),
    );
    println!();
    kit::correction(
        "its `if pid < 0: print(\"Error\")` can never run: a failed os.fork() raises \
         OSError, it never returns a negative pid (brood::os::fork returns an Err).",
    );
    if let Ok(max) = std::fs::read_to_string("/proc/sys/kernel/pid_max") {
        line(
            "parent",
            format!(
                "pids go up to {} (/proc/sys/kernel/pid_max), then wrap around and are reused",
                max.trim()
            ),
        );
    }
    Ok(())
}
