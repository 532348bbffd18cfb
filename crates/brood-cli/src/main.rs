//! The `brood` command.
//!
//! - `brood tour [TOPIC]...` runs, live, every example of the reference
//!   tutorial's lessons on processes (states, `fork`, pids and exit codes,
//!   orphans and zombies, `wait`, the double fork, `SIGCHLD`,
//!   `brood::Process`, start methods, pipes, shared memory, semaphores) and
//!   explains what happened and why, then the pool, queues, managers,
//!   logging, events and brood-redis.
//! - `brood ps [--tree] [PID]` prints the process table like `ps -ajx`, or as
//!   a tree like `pstree`, with a legend for the STAT letters it shows and
//!   zombies and orphans marked.
//! - `brood top [--once]` shows every brood pool on the machine, live: per
//!   pool its owner and name, per worker its pid, state, tasks done,
//!   restarts and why, and resident memory (from the pools' status pages).
//! - `brood worker --redis URL --name NAME` runs a brood-redis worker node
//!   for the tasks this binary registers; `brood redis status URL [NAME]`
//!   and `brood redis requeue URL NAME` look at a pool on Redis.

mod ps;
mod redis;
mod top;
mod tour;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The command line: one subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "brood",
    version,
    about = "Processes, live: a tour of fork, wait, zombies and orphans, and a process table."
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a live tour of processes, each example explained.
    ///
    /// Every example of the reference tutorial ("详解python网络进程") runs for
    /// real, section by section (states, fork, pids and exit codes, orphans,
    /// zombies, wait, the double fork, SIGCHLD, brood::Process, start
    /// methods, pipes, shared memory, semaphores), each with the reference's
    /// Python verbatim, its section number, the Rust beside it, and the
    /// reference corrected where it is wrong. Exits non-zero if any topic
    /// did not go as expected.
    #[command(after_help = tour::missing_note())]
    Tour {
        /// The topics to run, in the order given (all of them, in order, when
        /// none is given; see --list).
        topics: Vec<String>,
        /// Lists the topics with a one-line description, and runs nothing.
        #[arg(long)]
        list: bool,
    },
    /// Prints the process table, like `ps -ajx` or (--tree) `pstree`.
    ///
    /// A legend after the table explains the STAT letters and flags shown,
    /// and zombies and orphans are marked.
    Ps {
        /// Draws each process under its parent.
        #[arg(long)]
        tree: bool,
        /// Shows only this process and its descendants.
        pid: Option<i32>,
    },
    /// Shows every brood pool on this machine, live, like `htop`.
    ///
    /// Per pool its owner pid and name; per worker its pid, state (idle,
    /// running task N for how long, stopping, restarting), tasks done,
    /// restarts and why, and resident memory. Read from the pools' status
    /// pages in /dev/shm: no server.
    Top {
        /// Prints one snapshot and exits (for scripts).
        #[arg(long)]
        once: bool,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Runs a brood-redis worker node for the tasks this binary registers,
    /// until killed.
    Worker {
        /// The Redis URL, `redis://[:password@]host:port/[db]`.
        #[arg(long)]
        redis: String,
        /// The pool's name (callers use the same in `RedisPool::connect`).
        #[arg(long)]
        name: String,
        /// Local worker processes (default: one per CPU).
        #[arg(long)]
        processes: Option<usize>,
        /// Seconds a task may go without a heartbeat before another worker
        /// takes it over.
        #[arg(long, default_value_t = 5.0)]
        lease: f64,
        /// Deliveries before a task that keeps killing its worker becomes a
        /// dead letter.
        #[arg(long, default_value_t = 3)]
        max_deliveries: u32,
        /// Prints nothing about reconnections.
        #[arg(long)]
        quiet: bool,
    },
    /// Looks at brood-redis pools: `status`, `requeue`.
    Redis {
        /// What to do.
        #[command(subcommand)]
        command: redis::RedisCommand,
    },
}

/// Parses the command line and runs the subcommand.
fn main() -> ExitCode {
    // Like other Unix commands, die quietly of SIGPIPE when the reader goes
    // away (`brood ps | head`), instead of panicking on the failed write
    // (Rust ignores SIGPIPE by default).
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match cli.command {
        Command::Tour { topics, list } => {
            if list {
                tour::list();
                ExitCode::SUCCESS
            } else {
                tour::run(&topics)
            }
        }
        Command::Top { once, interval } => {
            let interval = Duration::try_from_secs_f64(interval)
                .ok()
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(1));
            match top::run(once, interval) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("brood top: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ps { tree, pid } => match ps::run(tree, pid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("brood ps: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Worker {
            redis,
            name,
            processes,
            lease,
            max_deliveries,
            quiet,
        } => match redis::worker(&redis, &name, processes, lease, max_deliveries, quiet) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("brood worker: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Redis { command } => match redis::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("brood redis: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
