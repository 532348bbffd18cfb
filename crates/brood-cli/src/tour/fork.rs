//! `fork()`: one call, two returns, two copies of memory.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Result, ensure};
use brood::os;

use super::kit::{self, Kid, code, explain, line, python};

/// Forks with `a = 1`; the child sets its `a` to 10000 and the parent still
/// sees 1. Then shows why stdout is flushed before a fork.
pub(crate) fn run() -> Result<()> {
    explain(
        "fork() makes a new process that is a copy of the caller: same code, same memory \
         contents, same open files. It is called once and returns twice: in the original \
         process (the parent) it returns the new process's pid, in the new one (the child) \
         it returns 0 -- ForkResult::Parent { child } and ForkResult::Child in brood. Each \
         side tests the return value to choose what to do. The child starts at the \
         instruction after fork(), not at the top of the program; neither side is \
         guaranteed to run first. From then on their memory is separate: a write on one \
         side is invisible to the other.",
    );
    python(
        "a = 1\n\
         pid = os.fork()\n\
         if pid < 0:    print(\"fork failed\")        # Rust: Err(io::Error)\n\
         elif pid == 0: print(\"a =\", a); a = 10000; print(\"a =\", a)\n\
         else:          sleep(1); print(\"parent a:\", a)   # still 1",
    );
    code(
        "Rust",
        "let mut a = 1;\n\
         match unsafe { brood::os::fork() }? {\n\
         \x20   ForkResult::Child => { a = 10000; brood::os::exit_now(0) }\n\
         \x20   ForkResult::Parent { child } => { /* wait for child; a is still 1 */ }\n\
         }",
    );

    let mut a: i32 = 1;
    let before = os::getpid();
    line(
        "parent",
        format!("before fork: a = {a}; this line is printed once, by the parent only"),
    );
    let mut kid = Kid::fork(|| {
        line("child", "fork() returned ForkResult::Child (Python: 0)");
        line(
            "child",
            format!("a = {a}, at address {:p}: a copy of the parent's", &a),
        );
        a = 10_000;
        line("child", format!("set a = {a}"));
        line(
            "child",
            format!(
                "my pid is {}, the parent that called fork() is {before}",
                os::getpid()
            ),
        );
        i32::from(a != 10_000)
    })?;
    let child = kid.pid();
    let status = kid.join()?;
    line(
        "parent",
        format!("fork() returned ForkResult::Parent {{ child: {child} }} (Python: {child})"),
    );
    line(
        "parent",
        format!("the child {status}; here a = {a}, at address {:p}", &a),
    );
    ensure!(status.success(), "the child should exit with 0: {status}");
    ensure!(a == 1, "the parent's a changed to {a}: memory was shared?");
    line(
        "parent",
        "same address on both sides, different values: the child wrote to its own copy \
         (the kernel copies a page when either side first writes to it: copy-on-write)",
    );
    println!();

    // Why flush before fork: a buffer is memory too, and gets copied.
    explain(
        "Why the tour flushes stdout before every fork: an output buffer is memory too. \
         Text written but not yet flushed sits in the buffer, the child gets a copy of it, \
         and both processes flush it later: it comes out twice. Here a BufWriter to a pipe \
         holds one line when the process forks; both sides then flush it.",
    );
    python("sys.stdout.flush()   # before os.fork(), or the buffered text is printed twice");
    let (read, write) = kit::pipe()?;
    let mut out = BufWriter::new(File::from(write));
    writeln!(out, "written once, before the fork")?;
    let mut kid = Kid::fork(|| i32::from(out.flush().is_err()))?;
    drop(out); // the parent's copy flushes here, and the write end closes
    let status = kid.join()?;
    let text = String::from_utf8_lossy(&kit::read_all(&read)?).into_owned();
    for l in text.lines() {
        line("parent", format!("the pipe received: {l:?}"));
    }
    let copies = text.matches("written once").count();
    ensure!(
        status.success() && copies == 2,
        "expected the buffered line twice (child {status}), got {copies}"
    );
    line(
        "parent",
        "twice: once from each copy of the buffer. Flushing first prevents it.",
    );
    Ok(())
}
