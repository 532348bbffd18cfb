//! `brood worker --redis URL --name NAME` (a brood-redis worker node for
//! the tasks this binary registers), `brood redis status URL [NAME]` and
//! `brood redis requeue URL NAME`.
//!
//! A worker node runs the `#[brood::task]` functions registered in its own
//! binary: `brood worker` serves the few below (the tour's); a program with
//! its own tasks calls `brood_redis::Worker::new(url, name).run()` from its
//! `main` instead.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;

/// `brood redis ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RedisCommand {
    /// Shows a pool's queue depth, the tasks each worker holds, live
    /// workers with their last heartbeat and rate, and dead letters.
    Status {
        /// The Redis URL, `redis://[:password@]host:port/[db]`.
        url: String,
        /// The pool's name (every pool found, when left out).
        name: Option<String>,
    },
    /// Moves a pool's dead letters back to its task stream.
    Requeue {
        /// The Redis URL.
        url: String,
        /// The pool's name.
        name: String,
    },
}

/// Runs `brood redis ...`.
pub(crate) fn run(cmd: RedisCommand) -> Result<()> {
    match cmd {
        RedisCommand::Status { url, name } => {
            let all = brood_redis::status(&url, name.as_deref())?;
            if all.is_empty() {
                println!("no brood pool in this Redis");
            }
            for s in all {
                print!("{s}");
            }
            Ok(())
        }
        RedisCommand::Requeue { url, name } => {
            let n = brood_redis::requeue(&url, &name)?;
            println!("moved {n} dead letter(s) of pool {name:?} back to its queue");
            Ok(())
        }
    }
}

/// Runs `brood worker --redis URL --name NAME`: until killed.
pub(crate) fn worker(
    url: &str,
    name: &str,
    processes: Option<usize>,
    lease: f64,
    max_deliveries: u32,
    quiet: bool,
) -> Result<()> {
    let mut w = brood_redis::Worker::new(url, name)
        .lease(Duration::from_secs_f64(lease.max(0.1)))
        .max_deliveries(max_deliveries)
        .quiet(quiet);
    if let Some(n) = processes {
        w = w.processes(n);
    }
    if !quiet {
        eprintln!(
            "brood worker: pool {name:?}, serving {} task(s) registered in this binary",
            brood::task::registered().count()
        );
    }
    w.run().context("brood worker")
}

/// The square of `x` (a task `brood worker` serves; the tour sends it).
#[brood::task]
pub(crate) fn square(x: u64) -> u64 {
    x * x
}

/// Which process and host ran it (the tour shows it is not the caller).
#[brood::task]
pub(crate) fn whoami(i: u32) -> (u32, i32, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    (i, brood::os::getpid().as_raw(), host.trim().to_owned())
}

/// Kills the process that runs it, every time (the tour's poison task).
#[brood::task]
pub(crate) fn crash(_x: u64) -> u64 {
    brood::os::exit_now(3)
}

/// The registered name of a task of this module.
pub(crate) fn task(f: &str) -> String {
    format!("{}::{f}", module_path!())
}
