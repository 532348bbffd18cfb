//! Exit codes: `exit_now` (Python's `os._exit`), a normal end, what the
//! parent reads back with `waitpid`, and output lost without a flush.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Result, bail, ensure};
use brood::os::{self, ExitStatus};

use super::kit::{self, Kid, explain, line, python};
use super::reference;

/// The reference's example, as this topic runs it.
const RUST: &str = "// os._exit(0) is brood::os::exit_now(0): the process ends at once\n\
fn leave(why: &str) -> Result<(), String> {\n\
\x20   Err(why.to_string())                   // sys.exit(\"退出\") raises SystemExit\n\
}\n\
match leave(\"退出\") {\n\
\x20   Err(e) => println!(\"退出原因: {e}\"),    // except SystemExit as e: 退出原因: 退出\n\
\x20   Ok(()) => {}\n\
}";

/// The reference's `sys.exit("退出")`: a reason to stop, handed up as an
/// error (Rust has no exception to catch).
fn leave(why: &str) -> std::result::Result<(), String> {
    Err(why.to_string())
}

/// One way for a child to end: what it does, its body, the status expected.
type Case = (&'static str, fn() -> i32, ExitStatus);

/// Runs children that end in different ways and decodes each status.
pub(crate) fn run() -> Result<()> {
    explain(
        "A process ends with an exit code, a number from 0 to 255: 0 means success, anything \
         else a failure of the program's choosing. Its parent reads it back with wait() or \
         waitpid() (next topics), decoded by brood into ExitStatus::Exited(code) -- \
         Python's os.WIFEXITED(status) and os.WEXITSTATUS(status).\n\n\
         Python has two ways out: sys.exit(code) raises SystemExit, which can be caught, \
         unwinds, runs cleanups and flushes buffers; os._exit(code) ends the process at \
         once, with none of that. Rust's equivalents are returning from main (or \
         std::process::exit) and brood::os::exit_now. A forked child always ends with \
         exit_now: it must not run its parent's cleanups a second time, nor return into \
         code meant to run once -- so it flushes what it printed first, by hand.",
    );
    kit::reference("§3.1", reference::EXIT);
    kit::rust(RUST);
    match leave("退出") {
        Err(e) => line("parent", format!("退出原因: {e}")),
        Ok(()) => bail!("leave() should have returned its reason"),
    }
    line(
        "parent",
        "  (Rust has no exception to catch: the reason travels up as an Err, and the \
         function that matches it decides whether the process ends)",
    );
    println!();
    explain(
        "Below, children forked by the tour end in each way, and the tour reads how with \
         waitpid (Python: os.waitpid(pid, 0), then os.WEXITSTATUS(status)).",
    );
    python(
        "pid = os.fork()\n\
         if pid == 0:\n\
         \x20   os._exit(3)                # or sys.exit(3); sys.exit(\"退出\") prints 退出, exits 1\n\
         _, status = os.waitpid(pid, 0)\n\
         print(os.WEXITSTATUS(status))  # 3",
    );
    kit::code(
        "Rust",
        "let child = kit::fork_raw(|| brood::os::exit_now(3))?;\n\
         let (_, status) = brood::os::waitpid(Some(child), WaitFlags::empty())?.unwrap();\n\
         status.code()                  // Some(3): ExitStatus::Exited(3)",
    );

    let cases: [Case; 4] = [
        (
            "does its work and ends normally: flush, then exit code 0 (Python: the script ends)",
            || 0,
            ExitStatus::Exited(0),
        ),
        (
            "calls exit_now(3) (Python: os._exit(3))",
            || os::exit_now(3),
            ExitStatus::Exited(3),
        ),
        (
            "prints its reason on stderr and exits 1 (Python: sys.exit(\"退出\"))",
            || {
                eprintln!(
                    "  {:>10} {:>7} | 退出   <- the child's reason, on its stderr",
                    "child",
                    os::getpid()
                );
                1
            },
            ExitStatus::Exited(1),
        ),
        (
            "calls exit_now(261): only the low 8 bits reach the parent, 261 % 256 = 5",
            || os::exit_now(261),
            ExitStatus::Exited(5),
        ),
    ];
    for (what, body, expected) in cases {
        let mut kid = Kid::fork(body)?;
        let pid = kid.pid();
        let status = kid.join()?;
        line("parent", format!("child {pid} {what}"));
        line(
            "parent",
            format!(
                "  waitpid({pid}) -> {status:?}: {status}; code() = {:?}",
                status.code()
            ),
        );
        ensure!(status == expected, "expected {expected}, got {status}");
    }
    println!();

    explain(
        "What exit_now skips: Rust's stdout keeps text in a buffer until a newline (or a \
         flush). A child that prints without a newline and calls exit_now loses that text; \
         one that flushes first does not. The two children below print into a pipe the \
         parent reads.",
    );
    for flush in [false, true] {
        let (read, write) = kit::pipe()?;
        let mut kid = Kid::fork(|| child_prints(&write, flush))?;
        drop(write);
        let status = kid.join()?;
        let got = String::from_utf8_lossy(&kit::read_all(&read)?).into_owned();
        let how = if flush {
            "print!(..), flush, exit_now(0)"
        } else {
            "print!(..) without newline, exit_now(0)"
        };
        line("parent", format!("child {how}: the pipe received {got:?}"));
        ensure!(status.success(), "the child should exit 0: {status}");
        ensure!(
            got.is_empty() != flush,
            "expected {} output",
            if flush { "the" } else { "no" }
        );
    }
    line(
        "parent",
        "unflushed text dies with the process: flush before exit_now (Python: os._exit \
         skips flushing sys.stdout too)",
    );
    Ok(())
}

/// In the child: points stdout at `write`, prints without a newline, and
/// ends with `exit_now`, after flushing only if `flush`.
fn child_prints(write: &OwnedFd, flush: bool) -> i32 {
    use std::io::Write;
    // SAFETY: dup2 replaces this child's fd 1 with a copy of the pipe's write
    // end; both fds are open, and nothing else uses fd 1 meanwhile (the
    // process is single-threaded).
    if unsafe { libc::dup2(write.as_raw_fd(), libc::STDOUT_FILENO) } == -1 {
        return 70;
    }
    print!("printed by the child");
    if flush {
        let _ = std::io::stdout().flush();
    }
    os::exit_now(0)
}
