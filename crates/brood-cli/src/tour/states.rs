//! Multitasking and process states: the STAT column of `ps`, live.

use std::time::Instant;

use anyhow::{Result, ensure};
use brood::os::{self, ExitStatus, ProcInfo, ProcState, WaitFlags, proc::STAT_FLAGS};

use super::kit::{self, BOUND, Kid, explain, line, show};
use super::reference;

/// The tour's Python for §2, which shows no code.
const PYTHON: &str = "import os, signal, time\n\
os.system(f\"ps -o pid,stat,cmd -p {os.getpid()}\")   # R: this process, running\n\
pid = os.fork()\n\
if pid == 0: time.sleep(10); os._exit(0)              # the child sleeps: S\n\
os.kill(pid, signal.SIGSTOP)                         # stopped: T\n\
os.kill(pid, signal.SIGCONT); os.kill(pid, signal.SIGTERM); os.waitpid(pid, 0)";

/// What this topic runs, in short.
const RUST: &str = "use brood::os::{self, ProcInfo};\n\
let me = ProcInfo::read(os::getpid())?;\n\
println!(\"{}\", me.stat());                        // R: reading /proc while running\n\
let kid = kit::fork_raw(|| { std::thread::sleep(BOUND); 0 })?;\n\
ProcInfo::read(kid)?.state;                        // Sleeping: S\n\
os::kill(kid, libc::SIGSTOP)?;                     // Stopped: T\n\
os::waitpid(Some(kid), WaitFlags::UNTRACED)?;      // Stopped(SIGSTOP)\n\
os::kill(kid, libc::SIGCONT)?;                     // S again";

/// Shows this process's own STAT, then a child seen sleeping (S), stopped
/// (T), resumed, and one running (R).
pub(crate) fn run() -> Result<()> {
    let cpus = brood::cpu_count();
    explain(&format!(
        "A program is a file on disk; a process is one run of it, with its own pid, memory \
         and open files, and a life that starts and ends. Multitasking runs several at once: \
         this process may use {cpus} CPU(s) (brood::cpu_count(), which honours the CPU \
         affinity mask: Python's os.process_cpu_count(), 3.13+, or \
         len(os.sched_getaffinity(0)); os.cpu_count() counts every CPU of the machine), so \
         up to {cpus} processes run in parallel; the others take turns on them \
         (concurrency), the kernel's scheduler handing each a time slice.\n\n\
         The tutorial's states -- ready, running, waiting (plus new and terminated) -- are \
         the first letter of the STAT column of `ps -ajx`, read here from /proc/PID/stat \
         with brood::os::ProcInfo::read (Python: psutil.Process(pid).status(), or reading \
         /proc yourself). R is ready or running (Linux does not tell them apart), S and D \
         are waiting, T is stopped, Z is terminated but not yet collected."
    ));
    kit::reference_says("§2, which shows no code", reference::STATES, PYTHON);
    kit::rust(RUST);
    kit::correction(
        "the list leaves out states and flags a learner will meet in ps: I (an idle kernel \
         thread), t (stopped by a debugger), X (dead), and the flag L (pages locked in \
         memory); and R does not tell ready from running -- Linux has one state for both.",
    );

    let me = ProcInfo::read(os::getpid())?;
    line("parent", "this process, as `ps -ajx` shows it:");
    show(&[&me]);
    ensure!(
        me.state == ProcState::Running,
        "this process should see itself running (R), saw {}",
        me.state
    );
    line(
        "parent",
        format!(
            "R: {}; this process is the one reading /proc, so it is on a CPU right now",
            me.state.meaning()
        ),
    );
    for flag in me.stat().chars().skip(1) {
        if let Some((_, meaning)) = STAT_FLAGS.iter().find(|(c, _)| *c == flag) {
            line("parent", format!("flag {flag}: {meaning}"));
        }
    }
    println!();

    // A child that sleeps: S.
    let mut sleeper = Kid::fork(|| {
        std::thread::sleep(BOUND);
        0
    })?;
    let pid = sleeper.pid();
    let info = kit::wait_for_state(pid, ProcState::Sleeping)?;
    line("parent", "a child that called sleep():");
    show(&[&info]);
    line(
        "parent",
        format!(
            "S: {}; it waits for a timer and uses no CPU",
            info.state.meaning()
        ),
    );

    // Stopped by SIGSTOP: T.
    sleeper.signal(libc::SIGSTOP)?;
    let info = kit::wait_for_state(pid, ProcState::Stopped)?;
    line("parent", "after os.kill(pid, signal.SIGSTOP):");
    show(&[&info]);
    let status = kit::reap_exited(pid, WaitFlags::UNTRACED)?;
    line(
        "parent",
        format!(
            "T: {}; waitpid(pid, WUNTRACED) reports it: {status}",
            info.state.meaning()
        ),
    );
    line(
        "parent",
        "(Ctrl-Z in a shell stops a job the same way, with another signal, SIGTSTP, which \
         a program may catch; SIGSTOP cannot be caught)",
    );
    ensure!(
        status == ExitStatus::Stopped(libc::SIGSTOP),
        "waitpid should report the stop, got {status}"
    );

    // Resumed by SIGCONT: S again.
    sleeper.signal(libc::SIGCONT)?;
    let info = kit::wait_for_state(pid, ProcState::Sleeping)?;
    line(
        "parent",
        format!(
            "after SIGCONT it is back to {} and sleeps on: stopped is not dead",
            info.stat()
        ),
    );
    println!();

    // A child that spins: R.
    let mut spinner = Kid::fork(|| {
        let end = Instant::now() + BOUND;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
        0
    })?;
    let info = kit::wait_for_state(spinner.pid(), ProcState::Running)?;
    line("parent", "a child that computes without pause:");
    show(&[&info]);
    line(
        "parent",
        "R: running, or runnable and waiting for its turn on a CPU (the ready state)",
    );

    // End both: a signal, then a bounded wait.
    spinner.signal(libc::SIGKILL)?;
    let spun = spinner.join()?;
    sleeper.signal(libc::SIGTERM)?;
    let slept = sleeper.join()?;
    line(
        "parent",
        format!("ended both: the spinner {spun}, the sleeper {slept}"),
    );
    ensure!(
        spun.signal() == Some(libc::SIGKILL) && slept.signal() == Some(libc::SIGTERM),
        "both children should have died of the signals sent"
    );
    println!();
    explain(
        "Not shown live: D, uninterruptible sleep, is a process stuck inside the kernel, \
         usually on disk or network-filesystem I/O; no signal reaches it until the I/O ends, \
         not even SIGKILL. Z, the zombie, has a topic of its own (`brood tour zombie`). The \
         flags after the letter: s session leader, + in the terminal's foreground group, l \
         multi-threaded, < high priority, N low priority. `brood ps` prints the whole table \
         with a legend.",
    );
    Ok(())
}
