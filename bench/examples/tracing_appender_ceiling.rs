//! The single-process ceiling of the log-rotation comparison (issue 16):
//! `tracing-appender`, the Rust ecosystem's rolling file appender, from one
//! process, writing the same PROCS x LINES numbered 36-byte lines as
//! `crates/brood/examples/log_rotation.rs` (each line one `io::Write` call,
//! no `tracing` formatting on either side), then every file read back and
//! the lines counted (lost, duplicated, torn).
//!
//! tracing-appender rotates by time only (no size rotation) and within one
//! process; the appender here is `Rotation::DAILY`, which is never due
//! during a run (unless it crosses midnight UTC), so its per-line cost is a
//! clock read, a comparison and one `write(2)` on an `O_APPEND` file. Three
//! rows:
//!
//! - the `RollingFileAppender` written directly (`io::Write`), the like of
//!   brood's `LogFile`: a line is in the file when `write` returns;
//! - the usual setup, `tracing_appender::non_blocking` over it with
//!   `lossy(false)`: the caller copies each line into a channel and a worker
//!   thread writes it; timed until the worker has written every line (a
//!   byte count kept by a thin wrapper around the appender: dropping the
//!   `WorkerGuard` waits at most a second, so it cannot be the stop
//!   watch);
//! - `non_blocking` with its defaults (lossy, 128,000 buffered lines): lines
//!   that find the channel full are dropped, and counted as lost.
//!
//! Not a dependency of the brood library: a dev-dependency of the bench
//! workspace only. `bench/log_rotation.sh` runs it between brood's and
//! Python's sides and prints the ratios.
//!
//! Usage: tracing_appender_ceiling [--procs 4] [--lines 100000]
//!        [--max-bytes N] [--backups N] (the last two are accepted and
//!        ignored, so one set of flags serves every side)

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_appender::non_blocking::NonBlockingBuilder;
use tracing_appender::rolling::{RollingFileAppender, Rotation};

fn line(id: u32, seq: u32) -> String {
    format!("W{id} {seq:06} abcdefghijklmnopqrstuvwxy\n")
}

/// (lost, duplicated, torn, files) over every file in `dir`.
fn count(dir: &Path, lines: u32) -> (u64, u64, u64, usize) {
    let mut seen: HashMap<(u32, u32), u64> = HashMap::new();
    let (mut torn, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        files += 1;
        for l in std::fs::read_to_string(&path).unwrap().lines() {
            let parsed = (|| {
                let (id, rest) = l.strip_prefix('W')?.split_once(' ')?;
                let (seq, pad) = rest.split_once(' ')?;
                (pad == "abcdefghijklmnopqrstuvwxy" && seq.len() == 6)
                    .then_some((id.parse().ok()?, seq.parse().ok()?))
            })();
            match parsed {
                Some(key) => *seen.entry(key).or_default() += 1,
                None => torn += 1,
            }
        }
    }
    let lost = u64::from(lines) - seen.len() as u64;
    let dup = seen.values().map(|n| n - 1).sum();
    (lost, dup, torn, files)
}

fn appender(dir: &Path) -> RollingFileAppender {
    RollingFileAppender::new(Rotation::DAILY, dir, "app.log")
}

/// The appender, counting the bytes its `write` calls took (the worker
/// thread's progress, for the non-blocking rows).
struct Counted {
    inner: RollingFileAppender,
    bytes: Arc<AtomicU64>,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Release);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `total` lines through `non_blocking` over the appender in `dir`
/// and returns the seconds until the worker thread has written all of them
/// (all but the dropped ones, when lossy).
fn through_non_blocking(dir: &Path, total: u32, lossy: bool) -> std::io::Result<f64> {
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: appender(dir),
        bytes: bytes.clone(),
    };
    let (mut writer, guard) = NonBlockingBuilder::default().lossy(lossy).finish(counted);
    let dropped = writer.error_counter();
    let t0 = Instant::now();
    for seq in 0..total {
        writer.write_all(line(1, seq).as_bytes())?;
    }
    let expected = (u64::from(total) - dropped.dropped_lines() as u64) * LINE_LEN;
    while bytes.load(Ordering::Acquire) < expected {
        // The worker ignores its write errors: give up rather than hang.
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(std::io::Error::other(
                "the non_blocking worker wrote too little in 120 s",
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(writer);
    drop(guard);
    Ok(secs)
}

/// Every line is this long: writer 1, six-digit sequence numbers.
const LINE_LEN: u64 = 36;

fn report(name: &str, dir: &Path, total: u32, secs: f64) {
    let (lost, dup, torn, files) = count(dir, total);
    println!(
        "{name}\t{:.0} lines/s\tlost {lost}\tduplicated {dup}\ttorn {torn}\tfiles {files}",
        f64::from(total) / secs
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut procs, mut lines) = (4u32, 100_000u32);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or("a flag needs a value")?;
        match flag.as_str() {
            "--procs" => procs = value.parse()?,
            "--lines" => lines = value.parse()?,
            "--max-bytes" | "--backups" => {}
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    assert_eq!(line(1, 0).len() as u64, LINE_LEN);
    let total = procs
        .checked_mul(lines)
        .filter(|&t| t <= 1_000_000)
        .ok_or("at most 1,000,000 lines in all (six-digit sequence numbers)")?;
    let root = std::env::temp_dir().join(format!("brood-appender-bench-{}", std::process::id()));
    let fresh = |name: &str| -> std::io::Result<std::path::PathBuf> {
        let d = root.join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };

    let dir = fresh("direct")?;
    let mut file = appender(&dir);
    let t0 = Instant::now();
    for seq in 0..total {
        file.write_all(line(1, seq).as_bytes())?;
    }
    file.flush()?;
    let secs = t0.elapsed().as_secs_f64();
    drop(file);
    report(
        "tracing-appender daily, 1 process, direct",
        &dir,
        total,
        secs,
    );

    let dir = fresh("nonblocking")?;
    let secs = through_non_blocking(&dir, total, false)?;
    report(
        "tracing-appender daily, 1 process, non_blocking lossless",
        &dir,
        total,
        secs,
    );

    let dir = fresh("lossy")?;
    let secs = through_non_blocking(&dir, total, true)?;
    report(
        "tracing-appender daily, 1 process, non_blocking lossy (default)",
        &dir,
        total,
        secs,
    );

    std::fs::remove_dir_all(&root)?;
    Ok(())
}
