//! Runs a command as a child subreaper and fails if it leaves processes
//! behind: the test command runs the whole suite under it
//! (`scripts/test.sh`).
//!
//! ```text
//! reap [--grace SECONDS] -- COMMAND [ARGS...]
//! ```
//!
//! With `PR_SET_CHILD_SUBREAPER`, every process the command starts that
//! outlives its parent is re-parented here instead of to init, so nothing
//! escapes the count. While the command runs, orphans that end are reaped
//! (and counted, for information). Once it has ended, the processes still
//! alive get `--grace` seconds (default 10: a resource tracker or a
//! forkserver ends shortly after its last user) to end; any left after that
//! are listed, killed and reaped, and the exit status is 1. Otherwise the
//! exit status is the command's.

use std::io;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use brood::os::{self, ExitStatus, WaitFlags};

fn usage() -> ExitCode {
    eprintln!("usage: reap [--grace SECONDS] -- COMMAND [ARGS...]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut grace = Duration::from_secs(10);
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--grace" => match args.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(s) if s >= 0.0 => grace = Duration::from_secs_f64(s),
                _ => return usage(),
            },
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            _ => return usage(),
        }
    }
    if command.is_empty() {
        return usage();
    }
    if let Err(e) = os::set_child_subreaper(true) {
        eprintln!("reap: cannot become a subreaper: {e}");
        return ExitCode::from(2);
    }
    let child = match Command::new(&command[0]).args(&command[1..]).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("reap: cannot run {}: {e}", command[0]);
            return ExitCode::from(2);
        }
    };
    let pid = child.id() as i32;
    // Reap everything until the command itself ends.
    let mut orphans = 0usize;
    let status = loop {
        match os::waitpid(None, WaitFlags::empty()) {
            Ok(Some((p, status))) if p.as_raw() == pid => break status,
            Ok(Some(_)) => orphans += 1,
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("reap: waitpid: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let me = os::getpid();
    let deadline = Instant::now() + grace;
    let left = loop {
        orphans += reap_ended();
        let left: Vec<_> = os::proc::children(me)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.state != os::ProcState::Zombie)
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if orphans > 0 {
        eprintln!("reap: {orphans} orphaned process(es) ended during the run and were reaped");
    }
    let code = match status {
        ExitStatus::Exited(code) => code,
        other => {
            eprintln!("reap: {} ended by {other:?}", command[0]);
            1
        }
    };
    if !left.is_empty() {
        eprintln!(
            "reap: {} process(es) left behind, {} s after the command ended:",
            left.len(),
            grace.as_secs_f64()
        );
        for p in &left {
            eprintln!(
                "  pid {} ({}, {:?}): {}",
                p.pid,
                p.name,
                p.state,
                p.cmdline.join(" ")
            );
            let _ = os::kill(p.pid, libc::SIGKILL);
        }
        // Reap what was killed (bounded: a process stuck in the kernel is
        // left to init when we exit).
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && os::proc::children(me).is_ok_and(|c| !c.is_empty()) {
            reap_ended();
            std::thread::sleep(Duration::from_millis(20));
        }
        return ExitCode::from(1);
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Reaps every child that has ended, without waiting; returns how many.
fn reap_ended() -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = os::waitpid(None, WaitFlags::NOHANG) {
        n += 1;
    }
    n
}
