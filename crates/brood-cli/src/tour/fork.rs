//! `fork()`: one call, two returns, two copies of memory.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Result, ensure};
use brood::os;

use super::kit::{self, Kid, explain, line, python};
use super::reference;

/// The first example, as this topic runs it.
const RUST_FORK: &str = "match unsafe { brood::os::fork() } {     // Python's os.fork()\n\
\x20   Err(e) => println!(\"创建进程失败: {e}\"),  // a failed fork is an Err, never a pid < 0\n\
\x20   Ok(ForkResult::Child) => println!(\"新进程创建成功\"),\n\
\x20   Ok(ForkResult::Parent { child }) => {\n\
\x20       brood::os::waitpid(Some(child), WaitFlags::empty())?;   // instead of sleep(1)\n\
\x20       println!(\"原来的进程\");\n\
\x20   }\n\
}\n\
println!(\"程序执行完毕\");                      // both processes get here\n\
// (the tour's child then ends with brood::os::exit_now(0))";

/// The variables example, as this topic runs it.
const RUST_VARIABLES: &str = "let mut a = 1;\n\
match unsafe { brood::os::fork() }? {\n\
\x20   ForkResult::Child => {\n\
\x20       println!(\"子进程\"); println!(\"a =  {a}\");\n\
\x20       a = 10000; println!(\"a =  {a}\");\n\
\x20       brood::os::exit_now(0)\n\
\x20   }\n\
\x20   ForkResult::Parent { child } => {\n\
\x20       brood::os::waitpid(Some(child), WaitFlags::empty())?;\n\
\x20       println!(\"父进程\"); println!(\"parent a : {a}\");   // 1\n\
\x20   }\n\
}";

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
    kit::reference("§3", reference::FORK);
    kit::rust(RUST_FORK);
    let mut kid = Kid::fork(|| {
        line("child", "新进程创建成功");
        line("child", "程序执行完毕");
        0
    })?;
    let child = kid.pid();
    let status = kid.join()?;
    line("parent", "原来的进程");
    line("parent", "程序执行完毕");
    ensure!(status.success(), "the child should exit with 0: {status}");
    line(
        "parent",
        format!("程序执行完毕 was printed twice: once by the child ({child}), once by the parent"),
    );
    println!();
    kit::correction(
        "the output it states is three lines, but 程序执行完毕 prints twice, once per \
         process: both the child and the parent run the code after the if. And os.fork() \
         never returns a negative number: when it fails it raises OSError (brood::os::fork \
         returns Err(io::Error)), so the `if pid < 0` branch can never run.",
    );

    kit::reference("§3", reference::FORK_VARIABLES);
    kit::rust(RUST_VARIABLES);
    let mut a: i32 = 1;
    let before = os::getpid();
    line(
        "parent",
        format!("before fork: a = {a}; this line is printed once, by the parent only"),
    );
    let mut kid = Kid::fork(|| {
        line("child", "子进程");
        line("child", format!("a =  {a}"));
        line(
            "child",
            format!(
                "  (fork() returned ForkResult::Child, Python's 0; a is at address {:p}: a copy of the parent's)",
                &a
            ),
        );
        a = 10_000;
        line("child", format!("a =  {a}"));
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
    line("parent", "父进程");
    line("parent", format!("parent a : {a}"));
    line(
        "parent",
        format!("  (the child {status}; here a is at address {:p})", &a),
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
