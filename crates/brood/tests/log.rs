//! `brood::log`: many processes (every start method, and a separately
//! started program) append to one rotating log; nothing is lost, torn,
//! duplicated or rotated twice, and a process killed mid-way leaves a log
//! the others keep using.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brood::log::LogConfig;
use brood::{ErrorKind, Process, StartMethod};

const JOIN: Duration = Duration::from_secs(120);
/// Every test line is `W<id> <seq:06> <PAD>\n`: 36 bytes for a one-digit id.
const PAD: &str = "abcdefghijklmnopqrstuvwxy";
const LINE_LEN: u64 = 36;

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brood-log-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn line(id: u32, seq: u32) -> String {
    format!("W{id} {seq:06} {PAD}\n")
}

/// Writes `lines` numbered lines as writer `id`; returns how many.
fn write_lines((config, id, lines): (LogConfig, u32, u32)) -> u32 {
    let mut log = config.open().unwrap();
    for seq in 0..lines {
        log.write_all(line(id, seq).as_bytes()).unwrap();
    }
    lines
}

/// Writes numbered lines until killed (or, should the test fail before it
/// kills, for at most 20 s).
fn write_forever((config, id): (LogConfig, u32)) -> u32 {
    let mut log = config.open().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut seq = 0;
    while std::time::Instant::now() < end {
        log.write_all(line(id, seq).as_bytes()).unwrap();
        seq += 1;
    }
    seq
}

/// Not a test of its own: the entry point of the "unrelated program" that
/// `four_processes_of_every_kind_share_one_rotating_log` starts by running
/// this test binary again (a separate program, not a child brood started).
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var("BROOD_LOG_CHILD") else {
        return;
    };
    let mut parts = spec.split('|');
    let path = parts.next().unwrap();
    let max: u64 = parts.next().unwrap().parse().unwrap();
    let backups: u32 = parts.next().unwrap().parse().unwrap();
    let id: u32 = parts.next().unwrap().parse().unwrap();
    let lines: u32 = parts.next().unwrap().parse().unwrap();
    let config = LogConfig::new(path).max_bytes(max).backups(backups);
    write_lines((config, id, lines));
}

fn start_unrelated(
    config: &LogConfig,
    max: u64,
    backups: u32,
    id: u32,
    lines: u32,
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(
            "BROOD_LOG_CHILD",
            format!("{}|{max}|{backups}|{id}|{lines}", config.path().display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_child(mut child: std::process::Child) {
    let deadline = std::time::Instant::now() + JOIN;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "unrelated writer failed: {status}");
            return;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("unrelated writer did not finish in {JOIN:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The log's files, oldest first (backup N … backup 1, then the current
/// file), decompressed. Fails on a backup number skipped, a leftover
/// temporary file, or an unknown file.
fn files_oldest_first(config: &LogConfig) -> Vec<(String, Vec<u8>)> {
    let dir = config.path().parent().unwrap();
    let base = config
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut numbers = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == base || name == format!("{base}.lock") {
            continue;
        }
        let rest = name
            .strip_prefix(&format!("{base}."))
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        let (num, gz) = match rest.strip_suffix(".gz") {
            Some(num) => (num, true),
            None => (rest, false),
        };
        let n: u32 = num
            .parse()
            .unwrap_or_else(|_| panic!("unexpected file {name}"));
        assert!(
            numbers.insert(n, gz).is_none(),
            "backup {n} both plain and gzipped"
        );
    }
    let count = numbers.len() as u32;
    assert_eq!(
        numbers.keys().copied().collect::<Vec<_>>(),
        (1..=count).collect::<Vec<_>>(),
        "backup numbers are not 1..={count}"
    );
    let mut out = Vec::new();
    for (&n, &gz) in numbers.iter().rev() {
        let path = config.backup_path(n, gz);
        let raw = fs::read(&path).unwrap();
        let data = if gz {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut text)
                .unwrap();
            text
        } else {
            raw
        };
        out.push((path.display().to_string(), data));
    }
    out.push((
        config.path().display().to_string(),
        fs::read(config.path()).unwrap_or_default(),
    ));
    out
}

/// Every line parsed strictly (a torn or interleaved line fails), each
/// writer's sequence numbers in file order, strictly increasing (so no
/// line twice and each writer's order kept).
fn lines_by_writer(files: &[(String, Vec<u8>)]) -> BTreeMap<u32, Vec<u32>> {
    let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (name, data) in files {
        let text = std::str::from_utf8(data).unwrap_or_else(|_| panic!("{name} is not UTF-8"));
        assert!(
            data.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for l in text.lines() {
            let parsed = (|| {
                let rest = l.strip_prefix('W')?;
                let (id, rest) = rest.split_once(' ')?;
                let (seq, pad) = rest.split_once(' ')?;
                if pad != PAD || seq.len() != 6 {
                    return None;
                }
                Some((id.parse::<u32>().ok()?, seq.parse::<u32>().ok()?))
            })();
            let (id, seq) = parsed.unwrap_or_else(|| panic!("torn line in {name}: {l:?}"));
            let mine = seen.entry(id).or_default();
            if let Some(&last) = mine.last() {
                assert!(seq > last, "writer {id}: {seq} after {last} in {name}");
            }
            mine.push(seq);
        }
    }
    seen
}

/// Each backup was rotated because it was full: it holds more than
/// `max - one line` bytes (a file rotated twice would be near empty), and at
/// most one line over `max` per other writer (the limit is soft: writers
/// that check the size at the same moment under the shared lock may each
/// append one record).
fn assert_backups_full(files: &[(String, Vec<u8>)], max: u64, writers: u64) {
    for (name, data) in &files[..files.len() - 1] {
        let len = data.len() as u64;
        assert!(
            len <= max + (writers - 1) * LINE_LEN && len > max - LINE_LEN,
            "{name} holds {len} bytes, not a full file of about {max}"
        );
    }
}

/// Issue 16's must-show at full size: 4 processes × 100,000 lines through
/// one writer with 1 MiB size rotation (the writers are a fork, a spawn and
/// a forkserver child and this test binary run again as an unrelated
/// program). 20 backups, not the 5, so that no file is dropped and
/// every line can be counted (14.4 MB make 13 rotations). It takes 3–4 s
/// in a debug build on the 2-vCPU CI machine, so it stays in the suite at
/// this size.
#[test]
fn four_processes_of_every_kind_share_one_rotating_log() {
    common::allow_fork();
    let dir = scratch("four");
    let (max, backups, lines) = (1 << 20, 20, 100_000);
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(max)
        .backups(backups);
    let unrelated = start_unrelated(&config, max, backups, 4, lines);
    let mut kids = Vec::new();
    for (id, method) in [
        (1, StartMethod::Fork),
        (2, StartMethod::Spawn),
        (3, StartMethod::ForkServer),
    ] {
        let mut p = Process::builder()
            .start_method(method)
            .target_with(write_lines, (config.clone(), id, lines));
        p.start().unwrap();
        kids.push(p);
    }
    for mut p in kids {
        assert_eq!(p.join_timeout(JOIN).unwrap(), lines);
    }
    wait_child(unrelated);

    let files = files_oldest_first(&config);
    // 400,000 lines of 36 bytes (14.4 MB) in files of 1 MiB: 13 rotations,
    // all kept (the backup limit is tested below).
    assert!(
        files.len() > 13 && files.len() < backups as usize,
        "{} files",
        files.len()
    );
    assert_backups_full(&files, max, 4);
    let seen = lines_by_writer(&files);
    for id in 1..=4 {
        assert_eq!(seen[&id], (0..lines).collect::<Vec<_>>(), "writer {id}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_backup_limit_drops_only_the_oldest_files() {
    common::allow_fork();
    let dir = scratch("limit");
    let (max, backups, lines) = (4096, 3, 2_000);
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(max)
        .backups(backups);
    let mut kids = Vec::new();
    for (id, method) in [(1, StartMethod::Fork), (2, StartMethod::ForkServer)] {
        let mut p = Process::builder()
            .start_method(method)
            .target_with(write_lines, (config.clone(), id, lines));
        p.start().unwrap();
        kids.push(p);
    }
    for mut p in kids {
        assert_eq!(p.join_timeout(JOIN).unwrap(), lines);
    }
    let files = files_oldest_first(&config);
    assert_eq!(
        files.len(),
        backups as usize + 1,
        "exactly 3 backups and the current file"
    );
    assert_backups_full(&files, max, 2);
    // What is left of each writer is its newest lines, none missing.
    for (id, seqs) in lines_by_writer(&files) {
        let first = seqs[0];
        assert_eq!(seqs, (first..lines).collect::<Vec<_>>(), "writer {id}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

static CLOCK: AtomicU64 = AtomicU64::new(0);

fn test_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(CLOCK.load(Ordering::SeqCst))
}

#[test]
fn time_rotation_follows_a_clock_the_test_moves() {
    let dir = scratch("clock");
    CLOCK.store(1_000 * 60, Ordering::SeqCst);
    let config = LogConfig::new(dir.join("app.log"))
        .every(Duration::from_secs(60))
        .backups(5)
        .clock(test_clock);
    // Two independent opens: two lock descriptions, as two processes have.
    let a = config.clone().open().unwrap();
    let b = config.clone().open().unwrap();
    a.write_record(b"a0").unwrap();
    b.write_record(b"b0").unwrap();
    CLOCK.fetch_add(30, Ordering::SeqCst); // same minute: no rotation
    a.write_record(b"a1").unwrap();
    CLOCK.fetch_add(30, Ordering::SeqCst); // next minute: one rotation
    b.write_record(b"b1").unwrap();
    a.write_record(b"a2").unwrap(); // a reopens; does not rotate again
    CLOCK.fetch_add(600, Ordering::SeqCst); // ten minutes on
    a.write_record(b"a3").unwrap();
    b.write_record(b"b2").unwrap();
    let read = |p: PathBuf| fs::read_to_string(p).unwrap();
    assert_eq!(read(config.backup_path(2, false)), "a0\nb0\na1\n");
    assert_eq!(read(config.backup_path(1, false)), "b1\na2\n");
    assert_eq!(read(config.path().to_path_buf()), "a3\nb2\n");
    assert!(!config.backup_path(3, false).exists());
    // An empty file in a new period is not rotated into an empty backup.
    let c = LogConfig::new(dir.join("empty.log"))
        .every(Duration::from_secs(60))
        .clock(test_clock)
        .open()
        .unwrap();
    CLOCK.fetch_add(60, Ordering::SeqCst);
    c.write_record(b"first").unwrap();
    c.write_record(b"second").unwrap(); // same period as "first"
    assert!(!dir.join("empty.log.1").exists());
    assert_eq!(
        fs::read_to_string(dir.join("empty.log")).unwrap(),
        "first\nsecond\n"
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// Writes timestamped lines for `millis` ms: `W<id> <seq:06> <PAD>`.
fn write_for((config, id, millis): (LogConfig, u32, u64)) -> u32 {
    let mut log = config.open().unwrap();
    let end = std::time::Instant::now() + Duration::from_millis(millis);
    let mut seq = 0;
    while std::time::Instant::now() < end {
        log.write_all(line(id, seq).as_bytes()).unwrap();
        seq += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    seq
}

#[test]
fn time_rotation_every_second_across_processes() {
    common::allow_fork();
    let dir = scratch("seconds");
    let config = LogConfig::new(dir.join("app.log"))
        .every(Duration::from_secs(1))
        .backups(50);
    let mut kids = Vec::new();
    for (id, method) in [(1, StartMethod::Fork), (2, StartMethod::Spawn)] {
        let mut p = Process::builder()
            .start_method(method)
            .target_with(write_for, (config.clone(), id, 2_500));
        p.start().unwrap();
        kids.push(p);
    }
    let counts: Vec<u32> = kids
        .into_iter()
        .map(|mut p| p.join_timeout(JOIN).unwrap())
        .collect();
    let files = files_oldest_first(&config);
    // 2.5 s of writing crosses at least two second boundaries; each one is
    // one rotation, never one per process.
    // (Slow starts under load can spread the writers over a few more.)
    assert!((3..=10).contains(&files.len()), "{} files", files.len());
    let seen = lines_by_writer(&files);
    for (i, count) in counts.iter().enumerate() {
        assert_eq!(seen[&(i as u32 + 1)], (0..*count).collect::<Vec<_>>());
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gzip_backups_decompress_to_the_lines() {
    common::allow_fork();
    let dir = scratch("gzip");
    let (max, lines) = (8 * 1024, 1_000);
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(max)
        .backups(50)
        .gzip(true);
    let mut kids = Vec::new();
    for (id, method) in [(1, StartMethod::Fork), (2, StartMethod::ForkServer)] {
        let mut p = Process::builder()
            .start_method(method)
            .target_with(write_lines, (config.clone(), id, lines));
        p.start().unwrap();
        kids.push(p);
    }
    for mut p in kids {
        assert_eq!(p.join_timeout(JOIN).unwrap(), lines);
    }
    let files = files_oldest_first(&config);
    assert!(files.len() >= 8, "{} files", files.len());
    for (name, _) in &files[..files.len() - 1] {
        assert!(name.ends_with(".gz"), "{name} is not compressed");
    }
    assert_backups_full(&files, max, 2);
    let seen = lines_by_writer(&files);
    for id in 1..=2 {
        assert_eq!(seen[&id], (0..lines).collect::<Vec<_>>());
    }
    fs::remove_dir_all(&dir).unwrap();
}

fn trace_lines((config, lines): (LogConfig, u32)) -> u32 {
    let log = config.open().unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    for seq in 0..lines {
        tracing::info!(seq, pid = std::process::id(), "traced");
    }
    lines
}

fn log_crate_lines((config, lines): (LogConfig, u32)) -> u32 {
    let file = config.open().unwrap();
    brood::log::Logger::new(file, log::LevelFilter::Info)
        .install()
        .unwrap();
    for seq in 0..lines {
        log::info!("logged seq={seq}");
        log::debug!("below the level: never written");
    }
    lines
}

#[test]
fn tracing_and_log_in_children_land_in_the_shared_file() {
    let dir = scratch("tracing");
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(4096)
        .backups(100);
    let mut traced = Process::builder()
        .start_method(StartMethod::Spawn)
        .target_with(trace_lines, (config.clone(), 300));
    let mut logged = Process::builder()
        .start_method(StartMethod::ForkServer)
        .target_with(log_crate_lines, (config.clone(), 300));
    traced.start().unwrap();
    logged.start().unwrap();
    let traced_pid = traced.pid().unwrap().as_raw();
    let logged_pid = logged.pid().unwrap().as_raw();
    assert_eq!(traced.join_timeout(JOIN).unwrap(), 300);
    assert_eq!(logged.join_timeout(JOIN).unwrap(), 300);
    let files = files_oldest_first(&config);
    assert!(files.len() > 3, "rotated: {} files", files.len());
    let text: String = files
        .iter()
        .map(|(_, d)| String::from_utf8(d.clone()).unwrap())
        .collect();
    let mut traced_seqs = Vec::new();
    let mut logged_seqs = Vec::new();
    for l in text.lines() {
        if l.contains(" traced ") {
            assert!(l.contains(" INFO "), "{l}");
            assert!(l.ends_with(&format!("pid={traced_pid}")), "{l}");
            let seq = l.split("seq=").nth(1).unwrap().split(' ').next().unwrap();
            traced_seqs.push(seq.parse::<u32>().unwrap());
        } else {
            let (head, seq) = l
                .split_once(" logged seq=")
                .unwrap_or_else(|| panic!("{l}"));
            assert!(head.ends_with(&format!("[{logged_pid}]")), "{l}");
            logged_seqs.push(seq.parse::<u32>().unwrap());
        }
    }
    assert_eq!(traced_seqs, (0..300).collect::<Vec<_>>());
    assert_eq!(logged_seqs, (0..300).collect::<Vec<_>>());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigkilled_writers_leave_a_log_the_others_keep_rotating() {
    common::allow_fork();
    let dir = scratch("sigkill");
    let (max, backups, lines) = (8 * 1024, 2_000, 3_000);
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(max)
        .backups(backups);
    let mut victims = Vec::new();
    for (id, method) in [
        (5, StartMethod::Fork),
        (6, StartMethod::ForkServer),
        (7, StartMethod::Fork),
    ] {
        // A daemon dies with this test process, should the test fail.
        let mut p = Process::builder()
            .start_method(method)
            .daemon(true)
            .target_with(write_forever, (config.clone(), id));
        p.start().unwrap();
        victims.push(p);
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut survivors = Vec::new();
    for (id, method) in [(1, StartMethod::Fork), (2, StartMethod::Spawn)] {
        let mut p = Process::builder()
            .start_method(method)
            .target_with(write_lines, (config.clone(), id, lines));
        p.start().unwrap();
        survivors.push(p);
    }
    for mut v in victims {
        v.kill().unwrap();
        let err = v.join_timeout(JOIN).unwrap_err();
        assert_eq!(err.signal(), Some(libc::SIGKILL));
        std::thread::sleep(Duration::from_millis(15));
    }
    for mut p in survivors {
        assert_eq!(p.join_timeout(JOIN).unwrap(), lines);
    }
    // The log is still usable: this process writes and rotates on.
    write_lines((config.clone(), 3, lines));

    let files = files_oldest_first(&config);
    assert!(
        files.len() < backups as usize,
        "nothing may have been dropped"
    );
    let seen = lines_by_writer(&files);
    for id in 1..=3 {
        assert_eq!(seen[&id], (0..lines).collect::<Vec<_>>(), "writer {id}");
    }
    for id in 5..=7 {
        // A killed writer's lines are whole and in order (checked above),
        // and with none missing before its last.
        let got = &seen[&id];
        assert_eq!(
            *got,
            (0..got.len() as u32).collect::<Vec<_>>(),
            "writer {id}"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// What a writer killed at each step of a rotation leaves behind, built by
/// hand: the next writer finishes the rotation, losing no backup and
/// skipping no number.
#[test]
fn a_rotation_cut_short_is_finished_by_the_next_writer() {
    let dir = scratch("cut");
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(10)
        .backups(5)
        .gzip(true);
    let gz = |n: u32, text: &str| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        fs::write(config.backup_path(n, true), enc.finish().unwrap()).unwrap();
    };
    // Killed while shifting (3 -> 4 done, 2 -> 3 not yet: a gap at 3) and
    // after renaming app.log away (no app.log), while compressing backup 1
    // (a plain .1 and a partial .1.gz.tmp), with a garbage state line.
    gz(4, "old3\n");
    gz(2, "old2\n");
    fs::write(config.backup_path(1, false), "old1\n").unwrap();
    fs::write(dir.join("app.log.1.gz.tmp"), "partial").unwrap();
    fs::write(config.lock_path(), "garbage").unwrap();
    let log = config.clone().open().unwrap();
    log.write_record(b"new0 long enough").unwrap(); // into a fresh app.log
    log.write_record(b"new1").unwrap(); // rotates: finishes the cut rotation
    let files = files_oldest_first(&config);
    let texts: Vec<String> = files
        .iter()
        .map(|(_, d)| String::from_utf8(d.clone()).unwrap())
        .collect();
    assert_eq!(
        texts,
        ["old3\n", "old2\n", "old1\n", "new0 long enough\n", "new1\n"]
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = scratch("bad");
    let at = |name: &str| LogConfig::new(dir.join(name));
    let cases = [
        (at("a.log").max_bytes(0), "max_bytes"),
        (at("a.log").every(Duration::from_millis(500)), "interval"),
        (at("a.log").max_bytes(100).backups(0), "backups"),
        (at("a.log").max_record(0), "max_record"),
        (LogConfig::new("/"), "no file name"),
    ];
    for (config, word) in cases {
        let err = config.open().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState);
        assert!(err.to_string().contains(word), "{err}");
    }
    // A missing directory, and a "directory" that is a file.
    let err = at("missing/a.log").open().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("missing/a.log"), "{err}");
    fs::write(dir.join("file"), "").unwrap();
    let err = at("file/a.log").open().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    // A directory this user may not write (root may write anywhere).
    if unsafe_uid() != 0 {
        let ro = dir.join("ro");
        fs::create_dir(&ro).unwrap();
        let mut perm = fs::metadata(&ro).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o500);
        fs::set_permissions(&ro, perm).unwrap();
        let err = LogConfig::new(ro.join("a.log")).open().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().contains("ro/a.log"), "{err}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

#[test]
fn a_backup_that_cannot_be_renamed_loses_no_line() {
    let dir = scratch("blocked");
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(1024)
        .backups(1);
    // Backup 1 is a non-empty directory: it can be neither removed nor
    // replaced, so no rotation can happen.
    fs::create_dir(config.backup_path(1, false)).unwrap();
    fs::write(config.backup_path(1, false).join("x"), "").unwrap();
    let mut log = config.clone().open().unwrap();
    for seq in 0..200 {
        log.write_all(line(1, seq).as_bytes()).unwrap();
    }
    let err = log.rotation_error().expect("the rotation failed");
    assert!(err.contains("app.log.1"), "{err}");
    let text = fs::read(config.path()).unwrap();
    let seen = lines_by_writer(&[("app.log".into(), text)]);
    assert_eq!(seen[&1], (0..200).collect::<Vec<_>>());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lines_are_buffered_to_their_newline_and_bounded() {
    let dir = scratch("buffer");
    let config = LogConfig::new(dir.join("app.log")).max_record(16);
    let mut a = config.clone().open().unwrap();
    let mut b = a.clone();
    write!(a, "a: half ").unwrap();
    writeln!(b, "b whole").unwrap();
    writeln!(a, "and rest").unwrap();
    write!(b, "unfinished").unwrap();
    a.flush().unwrap();
    b.flush().unwrap(); // an unfinished line waits...
    assert_eq!(
        fs::read_to_string(config.path()).unwrap(),
        "b whole\na: half and rest\n"
    );
    drop(b); // ...until its writer goes
    write!(a, "{}", "x".repeat(40)).unwrap(); // over max_record: in pieces
    drop(a);
    let text = fs::read_to_string(config.path()).unwrap();
    let want = format!(
        "b whole\na: half and rest\nunfinished\n{}\n",
        "x".repeat(40)
    );
    assert_eq!(text, want);
    fs::remove_dir_all(&dir).unwrap();
}

/// A file over its size limit (`RLIMIT_FSIZE`, like a full disk) makes
/// `write` return an error, counted, with no panic.
#[test]
fn a_failing_write_is_an_error_not_a_panic() {
    common::allow_fork();
    let dir = scratch("full");
    let config = LogConfig::new(dir.join("app.log"));
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .target_with(
            |config: LogConfig| -> (u32, u64, String) {
                // SAFETY: plain syscalls on valid arguments.
                unsafe {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: 1000,
                        rlim_max: 1000,
                    };
                    libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
                }
                let mut log = config.open().unwrap();
                for seq in 0..100 {
                    if let Err(e) = log.write_all(line(1, seq).as_bytes()) {
                        return (seq, log.write_errors(), e.to_string());
                    }
                }
                (100, log.write_errors(), String::new())
            },
            config.clone(),
        );
    p.start().unwrap();
    let (failed_at, errors, message) = p.join_timeout(JOIN).unwrap();
    assert_eq!(failed_at, 27, "1000 bytes hold 27 lines of 36: {message}");
    assert_eq!(errors, 1);
    assert!(!message.is_empty());
    let _ = Path::new(&dir);
    fs::remove_dir_all(&dir).unwrap();
}

fn flock(file: &fs::File, op: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; flock touches no memory of ours.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), op) }, 0);
}

/// The lock protocol itself, with this test playing the other process: a
/// record that fits is written without the lock (one `write(2)`), even while
/// another process holds it exclusive; a record that crosses `max_bytes`
/// waits for the lock, and so does its rotation while a writer holds the
/// lock — so a rotation is decided by one process at a time.
#[test]
fn fitting_writes_take_no_lock_and_a_rotation_waits_for_the_lock() {
    let dir = scratch("protocol");
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(100)
        .backups(2);
    let log = config.clone().open().unwrap();
    log.write_record(b"first").unwrap();
    let other = fs::File::open(config.lock_path()).unwrap();
    let read = || fs::read_to_string(config.path()).unwrap();

    flock(&other, libc::LOCK_EX); // "rotating"
    log.write_record(b"second").unwrap(); // fits: no lock, no wait
    assert_eq!(read(), "first\nsecond\n");
    flock(&other, libc::LOCK_UN);

    flock(&other, libc::LOCK_SH); // "writing"
    let rotator = {
        let log = log.clone();
        std::thread::spawn(move || log.write_record(&[b'x'; 99]).unwrap())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !config.backup_path(1, false).exists(),
        "rotated during a write"
    );
    flock(&other, libc::LOCK_UN);
    rotator.join().unwrap();
    assert_eq!(
        fs::read_to_string(config.backup_path(1, false)).unwrap(),
        "first\nsecond\n"
    );
    assert_eq!(read(), format!("{}\n", "x".repeat(99)));
    fs::remove_dir_all(&dir).unwrap();
}

/// The shared size in the lock file (byte 2048 + 8, see log/README.md)
/// left far ahead of the file, as a writer killed between counting a record
/// and writing it leaves it: the next writer checks the file itself, does
/// not rotate a file that is not full, and takes the size from the file.
#[test]
fn a_wrong_shared_size_never_rotates_a_file_that_is_not_full() {
    use std::os::unix::fs::FileExt;
    let dir = scratch("drift");
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(1000)
        .backups(3);
    let log = config.clone().open().unwrap();
    log.write_record(b"first").unwrap();
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(config.lock_path())
        .unwrap();
    lock.write_all_at(&(1u64 << 40).to_ne_bytes(), 2048 + 8)
        .unwrap();
    log.write_record(b"second").unwrap();
    assert!(
        !config.backup_path(1, false).exists(),
        "rotated a 13-byte file"
    );
    assert_eq!(
        fs::read_to_string(config.path()).unwrap(),
        "first\nsecond\n"
    );
    // The count is right again: the file fills up and rotates once, full.
    for seq in 0..60 {
        log.write_record(line(1, seq).trim_end().as_bytes())
            .unwrap();
    }
    let files = files_oldest_first(&config);
    assert_eq!(files.len(), 3, "two full backups and the current file");
    assert_backups_full(&files, 1000, 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// Another program renames `app.log` away (logrotate without
/// `copytruncate`): writers notice within a second (their periodic `stat`)
/// and go on in a new `app.log`; what they wrote meanwhile is in the renamed
/// file, nothing is lost.
#[test]
fn an_external_rename_is_noticed_within_a_second() {
    let dir = scratch("external");
    let config = LogConfig::new(dir.join("app.log"))
        .max_bytes(1 << 20)
        .backups(3);
    let log = config.clone().open().unwrap();
    log.write_record(b"before").unwrap();
    let moved = dir.join("moved.log");
    fs::rename(config.path(), &moved).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    log.write_record(b"after").unwrap();
    assert_eq!(fs::read_to_string(&moved).unwrap(), "before\n");
    assert_eq!(fs::read_to_string(config.path()).unwrap(), "after\n");
    fs::remove_dir_all(&dir).unwrap();
}
