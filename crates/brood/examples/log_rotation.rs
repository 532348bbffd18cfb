//! brood's side of the log-rotation comparison (issue 16): N processes
//! write L numbered lines each through `brood::log` onto one file rotated at
//! MAX bytes, with enough backups to keep every line; then every file is
//! read back and the lines counted (lost, duplicated, torn). The same N
//! processes again with daily rotation instead of size (never due during a
//! run: the like of tracing-appender's `Rotation::DAILY`, which has no size
//! rotation). Two ceilings from one process: the same `LogFile`, and a plain
//! `O_APPEND` file without rotation. Python's side:
//! `bench/python/log_rotation.py`; tracing-appender's:
//! `bench/examples/tracing_appender_ceiling.rs`; `bench/log_rotation.sh`
//! runs them all and prints the ratios.
//!
//! Usage: log_rotation [--procs 4] [--lines 100000] [--max-bytes 1048576]
//!        [--backups 60]

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use brood::Process;
use brood::log::LogConfig;

fn line(id: u32, seq: u32) -> String {
    format!("W{id} {seq:06} abcdefghijklmnopqrstuvwxy\n")
}

fn write_lines((config, id, lines): (LogConfig, u32, u32)) -> u32 {
    let mut log = config.open().expect("open the log");
    for seq in 0..lines {
        log.write_all(line(id, seq).as_bytes()).expect("write");
    }
    lines
}

/// (lost, duplicated, torn, files)
fn count(config: &LogConfig, procs: u32, lines: u32) -> (u64, u64, u64, usize) {
    let dir = config.path().parent().unwrap();
    let mut seen: HashMap<(u32, u32), u64> = HashMap::new();
    let (mut torn, mut files) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lock") {
            continue;
        }
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
    let lost = u64::from(procs) * u64::from(lines) - seen.len() as u64;
    let dup = seen.values().map(|n| n - 1).sum();
    (lost, dup, torn, files)
}

/// Seconds for `procs` processes to write `lines` lines each through `config`.
fn many(config: &LogConfig, procs: u32, lines: u32) -> brood::Result<f64> {
    let t0 = Instant::now();
    let mut kids = Vec::new();
    for id in 1..=procs {
        let mut p = Process::with_args(write_lines, (config.clone(), id, lines));
        p.start()?;
        kids.push(p);
    }
    for mut p in kids {
        p.join()?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut procs, mut lines, mut max, mut backups) = (4u32, 100_000u32, 1u64 << 20, 60u32);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or("a flag needs a value")?;
        match flag.as_str() {
            "--procs" => procs = value.parse()?,
            "--lines" => lines = value.parse()?,
            "--max-bytes" => max = value.parse()?,
            "--backups" => backups = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let dir = std::env::temp_dir().join(format!("brood-log-bench-{}", std::process::id()));
    let fresh = |name: &str| -> std::io::Result<LogConfig> {
        let d = dir.join(name);
        std::fs::create_dir_all(&d)?;
        Ok(LogConfig::new(d.join("app.log"))
            .max_bytes(max)
            .backups(backups))
    };

    let total = f64::from(procs) * f64::from(lines);
    let config = fresh("many")?;
    let secs = many(&config, procs, lines)?;
    let (lost, dup, torn, files) = count(&config, procs, lines);
    println!(
        "brood LogFile, {procs} processes\t{:.0} lines/s\tlost {lost}\tduplicated {dup}\ttorn {torn}\tfiles {files}",
        total / secs
    );

    let d = dir.join("daily");
    std::fs::create_dir_all(&d)?;
    let config = LogConfig::new(d.join("app.log")).daily().backups(backups);
    let secs = many(&config, procs, lines)?;
    let (lost, dup, torn, files) = count(&config, procs, lines);
    println!(
        "brood LogFile, {procs} processes, daily rotation\t{:.0} lines/s\tlost {lost}\tduplicated {dup}\ttorn {torn}\tfiles {files}",
        total / secs
    );

    let config = fresh("one")?;
    let t0 = Instant::now();
    write_lines((config.clone(), 1, procs * lines));
    let secs = t0.elapsed().as_secs_f64();
    let (lost, dup, torn, files) = count(&config, 1, procs * lines);
    println!(
        "brood LogFile, 1 process\t{:.0} lines/s\tlost {lost}\tduplicated {dup}\ttorn {torn}\tfiles {files}",
        total / secs
    );

    let plain = dir.join("plain.log");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&plain)?;
    let t0 = Instant::now();
    for seq in 0..procs * lines {
        file.write_all(line(1, seq % 1_000_000).as_bytes())?;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "plain O_APPEND write, 1 process, no rotation\t{:.0} lines/s",
        total / secs
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
