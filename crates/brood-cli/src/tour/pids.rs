//! `getpid()` and `getppid()` on both sides of a fork.

use anyhow::{Result, ensure};
use brood::os;

use super::kit::{Kid, explain, line, name_of, python};

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
    python(
        "pid = os.fork()\n\
         if pid == 0:\n\
         \x20   print(\"Child PID:\", os.getpid())        # 26537\n\
         \x20   print(\"Get parent PID:\", os.getppid())  # 26536\n\
         else:\n\
         \x20   print(\"Get child PID:\", pid)            # 26537\n\
         \x20   print(\"Parent PID:\", os.getpid())       # 26536",
    );
    let parent = os::getpid();
    let mut kid = Kid::fork(|| {
        let (me, up) = (os::getpid(), os::getppid());
        line("child", format!("os::getpid()  = {me}: my own pid"));
        line(
            "child",
            format!("os::getppid() = {up}: my parent, the process that forked me"),
        );
        i32::from(up != parent || me == parent)
    })?;
    let child = kid.pid();
    let status = kid.join()?;
    line(
        "parent",
        format!("fork() returned {child}: the child's pid"),
    );
    line("parent", format!("os::getpid()  = {parent}: my own pid"));
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
