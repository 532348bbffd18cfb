//! `brood tour`: the reference tutorial's lessons on processes, run live.
//!
//! Each topic is one file in this folder with a `run` function, and one row
//! of [`TOPICS`]. A topic prints what it does, what happened and why, with
//! the reference's Python verbatim (its section, `§3`, in the heading) and
//! the Rust that does the same, corrects the reference where it is wrong,
//! and returns an error when something did not go as the lesson says (the
//! tour then exits non-zero). Later topics (the queue, the pool) are added
//! the same way: a file and a row, and their section leaves [`MISSING`].
//!
//! After each topic the runner checks that it left no zombie child and
//! restores the process-wide settings a topic may change (the subreaper
//! flag, the `SIGCHLD` action).

mod double_fork;
mod events;
mod exit;
mod fork;
pub(crate) mod kit;
mod log;
mod manager;
mod orphan;
mod pids;
mod pipe;
mod pool;
mod pool_limits;
mod process;
mod queue;
mod redis;
pub(crate) mod reference;
mod semaphore;
mod shared_memory;
mod sigchld;
mod start_methods;
mod states;
mod wait;
mod zombie;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use brood::os::{self, ProcState, WaitFlags};

/// One lesson of the tour.
pub(crate) struct Topic {
    /// What `brood tour NAME` runs.
    pub(crate) name: &'static str,
    /// The reference's sections it covers (`§3`, `§4.3`, `§5, §5.1`).
    pub(crate) section: &'static str,
    /// The heading printed before it runs.
    pub(crate) title: &'static str,
    /// One line for `brood tour --list`.
    pub(crate) summary: &'static str,
    /// Runs it: prints the lesson, and fails if what happened is not what the
    /// lesson says.
    pub(crate) run: fn() -> Result<()>,
}

/// Every topic, in the tutorial's order.
pub(crate) const TOPICS: &[Topic] = &[
    Topic {
        name: "states",
        section: "§1, §2",
        title: "multitasking and process states",
        summary: "the STAT letters of ps: this process (R), a sleeping child (S), a stopped one (T)",
        run: states::run,
    },
    Topic {
        name: "fork",
        section: "§3",
        title: "fork() and its two return values",
        summary: "one call, two returns; each side has its own copy of every variable",
        run: fork::run,
    },
    Topic {
        name: "pids",
        section: "§3.1",
        title: "process ids: getpid() and getppid()",
        summary: "who am I, who is my parent, seen from both sides of a fork",
        run: pids::run,
    },
    Topic {
        name: "exit",
        section: "§3.1",
        title: "exit codes: exit_now, a normal end, and what the parent reads",
        summary: "os._exit vs a normal end, exit codes decoded by waitpid, output lost without flush",
        run: exit::run,
    },
    Topic {
        name: "orphan",
        section: "§4.1",
        title: "orphans: a parent that leaves first",
        summary: "a grandchild whose parent exits is adopted: by init, or by a subreaper (this tour)",
        run: orphan::run,
    },
    Topic {
        name: "zombie",
        section: "§4.2",
        title: "zombies: a child nobody has waited for",
        summary: "a child that exited shows as Z until its parent reaps it with waitpid",
        run: zombie::run,
    },
    Topic {
        name: "wait",
        section: "§4.3",
        title: "wait(): collecting a child's exit status",
        summary: "os.wait/os.waitpid decoded: exit codes, signal deaths, WNOHANG, ECHILD",
        run: wait::run,
    },
    Topic {
        name: "double-fork",
        section: "§4.3",
        title: "the double fork: a grandchild nobody has to wait for",
        summary: "daemonize(): the middle process exits at once, init adopts and reaps the grandchild",
        run: double_fork::run,
    },
    Topic {
        name: "sigchld",
        section: "§4.3",
        title: "ignoring SIGCHLD: the kernel reaps the children",
        summary: "ignore_children(): no zombies, but wait() fails with ECHILD; then default_children()",
        run: sigchld::run,
    },
    Topic {
        name: "process",
        section: "§5, §5.1",
        title: "brood::Process, Python's multiprocessing.Process",
        summary: "start, join (with the value returned), name, pid, is_alive, daemon, exitcode, terminate, panics, join_timeout",
        run: process::run,
    },
    Topic {
        name: "start-methods",
        section: "§5",
        title: "start methods: fork, spawn and forkserver",
        summary: "the Process example under each method, timed; what threads forbid; tasks called by name",
        run: start_methods::run,
    },
    Topic {
        name: "pool",
        section: "§6",
        title: "Pool: worker processes for many tasks",
        summary: "the reference's Pool(4) with apply_async/close/join/get, map over a range, a killed worker's task reports WorkerLost, a capturing closure under a forked pool",
        run: pool::run,
    },
    Topic {
        name: "pool-limits",
        section: "§6",
        title: "beyond Python's pool: time limits, a memory ceiling, brood top",
        summary: "an endless task killed at its 1 s hard limit, a leaking worker retired, a brood top snapshot from a child",
        run: pool_limits::run,
    },
    Topic {
        name: "pipe",
        section: "§7.1",
        title: "Pipe(): messages between processes",
        summary: "duplex and one-way pipes, poll, end of file (and fork's extra copy), wait, fd passing, Listener",
        run: pipe::run,
    },
    Topic {
        name: "queue",
        section: "§7.2",
        title: "Queue: messages first in, first out",
        summary: "Queue(3) request/handle example; a 10 MiB put joined before reading; a producer killed mid-run",
        run: queue::run,
    },
    Topic {
        name: "shared-memory",
        section: "§7.3",
        title: "shared memory: Value, Array, SharedMemory",
        summary: "the monthly balance with and without the lock, arrays a child fills, a segment Python reads, a killed holder",
        run: shared_memory::run,
    },
    Topic {
        name: "semaphore",
        section: "§7.4",
        title: "Semaphore, BoundedSemaphore, Event, Barrier",
        summary: "at most 3 of 6 tasks at a time (timeline), over-release refused, set/wait, barrier indices",
        run: semaphore::run,
    },
    Topic {
        name: "log",
        section: "§links",
        title: "log rotation across processes (a topic the reference links to)",
        summary: "four processes, one rotating log: every line once, whole, in order; Python's RotatingFileHandler loses lines",
        run: log::run,
    },
    Topic {
        name: "events",
        section: "§links",
        title: "an event engine: handlers in worker processes, a timer",
        summary: "a timer event handled in another process; a failing handler and a killed worker reported, never fatal",
        run: events::run,
    },
    Topic {
        name: "manager",
        section: "§links",
        title: "distributed processes: a master and workers over TCP (a topic the reference links to)",
        summary: "the master/worker queues of Python's BaseManager on 127.0.0.1 with an auth key; a killed worker's task reported, not lost",
        run: manager::run,
    },
    Topic {
        name: "redis",
        section: "§links",
        title: "distributed processes: the pool on Redis, workers on any machine",
        summary: "a private redis-server, a worker node in another process, tasks by name, a crashing task in dead letters (skipped without redis-server)",
        run: redis::run,
    },
];

/// The reference's sections no topic covers yet, with what they teach.
pub(crate) const MISSING: &[(&str, &str)] = &[];

/// Says which sections of the reference the tour does not cover yet (for
/// `brood tour --help`, and the end of the tour).
pub(crate) fn missing_note() -> String {
    if MISSING.is_empty() {
        return "Every section of the reference tutorial has a topic.".to_string();
    }
    let mut out = String::from("Not in the tour yet (sections of the reference tutorial):\n");
    for (section, what) in MISSING {
        out.push_str(&format!("  {section:<5} {what}\n"));
    }
    out
}

/// Prints each topic's name, sections and summary (`brood tour --list`).
pub(crate) fn list() {
    let width = TOPICS.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let sections = TOPICS
        .iter()
        .map(|t| t.section.chars().count())
        .max()
        .unwrap_or(0);
    for topic in TOPICS {
        let pad = sections - topic.section.chars().count();
        println!(
            "{:<width$}  {}{:pad$}  {}",
            topic.name, topic.section, "", topic.summary
        );
    }
}

/// Runs the topics named (all of them, in order, when `names` is empty) and
/// says which failed. Exit status 0 when every topic went as expected, 1
/// when one did not, 2 for an unknown topic (then nothing runs).
pub(crate) fn run(names: &[String]) -> ExitCode {
    let mut chosen: Vec<&Topic> = Vec::new();
    for name in names {
        match TOPICS.iter().find(|t| t.name == name) {
            Some(topic) => chosen.push(topic),
            None => {
                let known: Vec<&str> = TOPICS.iter().map(|t| t.name).collect();
                eprintln!(
                    "brood tour: unknown topic `{name}`; the topics are: {} \
                     (see `brood tour --list`)",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = TOPICS.iter().collect();
    }
    let started = Instant::now();
    let mut failed: Vec<&str> = Vec::new();
    let count = chosen.len();
    for (i, topic) in chosen.iter().enumerate() {
        println!(
            "=== {}: {} {} [{}/{count}] ===",
            topic.name,
            topic.section,
            topic.title,
            i + 1
        );
        println!();
        let t0 = Instant::now();
        let outcome = (topic.run)().and_then(|()| check_clean());
        restore();
        match outcome {
            Ok(()) => println!(
                "  ok: {} went as expected ({} ms)\n",
                topic.name,
                t0.elapsed().as_millis()
            ),
            Err(e) => {
                println!("  FAILED: {}: {e:#}\n", topic.name);
                failed.push(topic.name);
            }
        }
        kit::flush();
    }
    let ms = started.elapsed().as_millis();
    if count == TOPICS.len() {
        println!("{}", missing_note());
    }
    let topics = if count == 1 { "topic" } else { "topics" };
    if failed.is_empty() {
        let all = if count == 1 { "" } else { "All " };
        println!("{all}{count} {topics} went as expected, in {ms} ms; no zombie left behind.");
        ExitCode::SUCCESS
    } else {
        println!(
            "{} of {count} {topics} did not go as expected: {} ({ms} ms).",
            failed.len(),
            failed.join(", ")
        );
        eprintln!("brood tour: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// Fails if the tour has a zombie child (a topic forgot to reap one); reaps
/// it on the way, so one topic's mistake does not fail the next.
fn check_clean() -> Result<()> {
    let mut zombies = Vec::new();
    for kid in os::proc::children(os::getpid())? {
        if kid.state == ProcState::Zombie {
            let _ = os::waitpid(Some(kid.pid), WaitFlags::NOHANG);
            zombies.push(kid.pid.to_string());
        }
    }
    if !zombies.is_empty() {
        bail!("left zombie children behind: {}", zombies.join(", "));
    }
    Ok(())
}

/// Puts back the process-wide settings a topic may have changed.
fn restore() {
    let _ = os::set_child_subreaper(false);
    let _ = os::default_children();
}
