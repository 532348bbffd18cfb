//! `brood top`: every brood pool on this machine, live, read from the
//! pools' status pages (`/dev/shm/brood-pool-*`) through
//! [`brood::pool::status::snapshot`]. No server, nothing to connect to:
//! a pool that is running has a page, one that ended has none.
//!
//! Per pool: its owner pid and name, workers, uptime, tasks done and
//! restarts; per worker: its position, pid, state (idle, running task N
//! for how long, stopping, restarting), tasks done, restarts and the last
//! one's cause, and resident memory (read from `/proc/<pid>/statm` here,
//! not by the pool). `--once` prints one snapshot for scripts; otherwise
//! the screen is redrawn every second until Ctrl-C. Pages whose owner died
//! without removing them are removed on the way.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use brood::pool::status::{self, PoolStatus};

/// Runs `brood top`: one snapshot with `once`, else a live view redrawn
/// every `interval`.
pub(crate) fn run(once: bool, interval: Duration) -> Result<()> {
    loop {
        // Pages of owners killed before they could remove them.
        let _ = status::clean_stale();
        let pools = status::snapshot().context("cannot read the pools' status pages")?;
        let text = render(&pools, SystemTime::now());
        let mut out = std::io::stdout().lock();
        if once {
            out.write_all(text.as_bytes())?;
            return Ok(());
        }
        // Home, clear, draw: a plain ANSI redraw.
        write!(out, "\x1b[H\x1b[2J{text}")?;
        writeln!(
            out,
            "\n(refreshing every {:.1}s; Ctrl-C to quit)",
            interval.as_secs_f64()
        )?;
        out.flush()?;
        drop(out);
        std::thread::sleep(interval);
    }
}

/// The column titles of the worker table, aligned with the rows.
pub(crate) const HEADER: &str =
    "    POS      PID  STATE                          TASKS  RESTARTS        RSS  LAST RESTART";

/// The snapshot as text: a line per pool, a row per worker.
pub(crate) fn render(pools: &[PoolStatus], now: SystemTime) -> String {
    let mut s = String::new();
    let workers: usize = pools.iter().map(|p| p.workers.len()).sum();
    let _ = writeln!(
        s,
        "brood top: {} pool{}, {} worker{}",
        pools.len(),
        if pools.len() == 1 { "" } else { "s" },
        workers,
        if workers == 1 { "" } else { "s" },
    );
    for p in pools {
        let up = now.duration_since(p.started).unwrap_or_default();
        let _ = writeln!(
            s,
            "\npool {:?}  owner {}  processes {}  up {}  tasks done {}  restarts {}",
            p.name,
            p.owner,
            p.processes,
            human_duration(up),
            p.tasks_done,
            p.restarts
        );
        let _ = writeln!(s, "{HEADER}");
        for w in &p.workers {
            let _ = writeln!(
                s,
                "    {:>3}  {:>7}  {:<29}  {:>5}  {:>8}  {:>9}  {}",
                w.position.map_or("-".to_string(), |i| i.to_string()),
                w.pid.map_or("-".to_string(), |p| p.to_string()),
                w.state.to_string(),
                w.tasks_done,
                w.restarts,
                w.rss.map_or("-".to_string(), human_bytes),
                w.last_restart.as_deref().unwrap_or(""),
            );
        }
    }
    s
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs / 60 % 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn human_bytes(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}
