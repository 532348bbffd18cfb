//! One log file that many processes append to, with rotation decided once.
//!
//! Python's `RotatingFileHandler` is safe across threads, not processes:
//! processes sharing one file each rotate on their own, losing lines or
//! rotating twice. A [`LogFile`] is a writer that any number of processes —
//! children of any start method, and programs started separately — open on
//! the same path. Each record is one `O_APPEND` `write(2)`, so lines never
//! tear or interleave; rotation by size ([`LogConfig::max_bytes`]) and/or
//! time ([`LogConfig::every`], [`hourly`](LogConfig::hourly),
//! [`daily`](LogConfig::daily)) into numbered backups (`app.log.1` newest …
//! `app.log.N` oldest, optionally gzipped) is decided under an `flock` on a
//! sidecar `app.log.lock`, so it happens once; a record that fits takes no
//! lock (the writers count the file's size in the mapped lock file), so the
//! common path is that one `write(2)`. The protocol, its invariants
//! and what a process killed mid-write or mid-rotation leaves behind are in
//! `src/log/README.md`.
//!
//! It plugs into the ecosystem instead of adding a logging API: a
//! [`LogFile`] is an [`std::io::Write`], a
//! `tracing_subscriber::fmt::MakeWriter` (feature `tracing`) and, through
//! [`Logger`], a backend for the `log` crate (feature `log`).
//!
//! ```
//! use std::io::Write;
//!
//! let dir = std::env::temp_dir().join(format!("brood-log-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let config = brood::log::LogConfig::new(dir.join("app.log")).max_bytes(64).backups(3);
//!
//! // A child process opens the same configuration and writes its own lines.
//! let mut child = brood::Process::with_args(
//!     |config: brood::log::LogConfig| {
//!         let mut log = config.open().unwrap();
//!         for i in 0..10 {
//!             writeln!(log, "child line {i}").unwrap();
//!         }
//!     },
//!     config.clone(),
//! );
//! child.start()?;
//! let mut log = config.open()?;
//! for i in 0..10 {
//!     writeln!(log, "parent line {i}")?;
//! }
//! child.join()?;
//!
//! // 20 lines of 13-14 bytes in files of at most 64: rotated several times.
//! let mut lines = 0;
//! for name in ["app.log", "app.log.1", "app.log.2", "app.log.3"] {
//!     lines += std::fs::read_to_string(dir.join(name))?.lines().count();
//! }
//! assert!(lines > 0 && lines <= 20);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod rotate;
#[cfg(feature = "tracing")]
mod tracing;

#[cfg(feature = "log")]
mod logger;
#[cfg(feature = "log")]
pub use logger::Logger;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::os::flock::{FlockOp, flock};
use crate::shm::FileWords;
use crate::{Error, Result};

/// The default cap on one buffered record, [`LogConfig::max_record`].
const DEFAULT_MAX_RECORD: usize = 1 << 20;

/// How long after a failed rotation the next attempt waits.
const ROTATION_RETRY: Duration = Duration::from_secs(1);

/// How often a writer on the lock-free path checks the path itself (`stat`,
/// under the lock), to notice a file renamed or truncated by another program.
const RECHECK: Duration = Duration::from_secs(1);

/// How far the shared size may run ahead of the file (records counted by
/// writers and not yet written) before the slow path, finding no rotation
/// due, takes the size from the file again.
const RESYNC_SLACK: u64 = 64 << 10;

/// The lock file is extended to this length; the first bytes are the state
/// line, the shared words live at [`WORDS_AT`].
const LOCK_FILE_LEN: usize = 4096;
/// Index (in 64-bit words) of the shared words in the lock file's mapping.
const WORDS_AT: usize = 2048 / 8;
/// Shared word: the inode of the current `app.log`, written under the
/// exclusive lock each time a writer (re)opens or rotates it.
const W_INO: usize = WORDS_AT;
/// Shared word: bytes written (or about to be) to the current `app.log`,
/// added to by every writer without the lock, reset under it.
const W_SIZE: usize = WORDS_AT + 1;

/// Where the log goes and when it rotates. Plain data: it is `Serialize`, so
/// a parent can hand it to its children, which [`open`](LogConfig::open) it.
///
/// ```
/// use std::time::Duration;
/// use brood::log::LogConfig;
///
/// let config = LogConfig::new("/var/log/app.log")
///     .max_bytes(10 << 20)
///     .every(Duration::from_secs(3600))
///     .backups(7)
///     .gzip(true);
/// assert_eq!(config.path(), std::path::Path::new("/var/log/app.log"));
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogConfig {
    path: PathBuf,
    max_bytes: Option<u64>,
    interval_secs: Option<u64>,
    backups: u32,
    gzip: bool,
    max_record: usize,
    #[serde(skip)]
    clock: Option<fn() -> SystemTime>,
}

impl LogConfig {
    /// A log at `path` that never rotates until told to, keeping 5 backups
    /// once it does, uncompressed.
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log");
    /// assert_eq!(config.path().to_str(), Some("app.log"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            path: path.into(),
            max_bytes: None,
            interval_secs: None,
            backups: 5,
            gzip: false,
            max_record: DEFAULT_MAX_RECORD,
            clock: None,
        }
    }

    /// Rotates before a record would make the file larger than `bytes`
    /// (Python's `maxBytes`). A soft limit: writers that find room at the
    /// same moment each append their record, so a file can end a few records
    /// over it. A record larger than `bytes` still goes, alone, into a fresh
    /// file. `0` is an error from [`open`](LogConfig::open).
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").max_bytes(1 << 20);
    /// # let _ = config;
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> LogConfig {
        self.max_bytes = Some(bytes);
        self
    }

    /// Rotates when the clock enters a new period of `interval`, counted in
    /// whole seconds from the Unix epoch (UTC), so periods line up across
    /// processes: a file holds the records of one period. Less than a second
    /// is an error from [`open`](LogConfig::open).
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").every(std::time::Duration::from_secs(60));
    /// # let _ = config;
    /// ```
    pub fn every(mut self, interval: Duration) -> LogConfig {
        self.interval_secs = Some(interval.as_secs());
        self
    }

    /// Rotates on the hour (UTC): `every(1 h)`.
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").hourly();
    /// # let _ = config;
    /// ```
    pub fn hourly(self) -> LogConfig {
        self.every(Duration::from_secs(3600))
    }

    /// Rotates at midnight UTC: `every(24 h)`.
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").daily().backups(30);
    /// # let _ = config;
    /// ```
    pub fn daily(self) -> LogConfig {
        self.every(Duration::from_secs(86_400))
    }

    /// How many rotated files to keep (`app.log.1` … `app.log.N`); the oldest
    /// is deleted when a rotation needs its number. Must be at least 1 when
    /// the log rotates (Python's `backupCount=0` silently never rotates;
    /// here it is an error from [`open`](LogConfig::open)).
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").max_bytes(4096).backups(10);
    /// # let _ = config;
    /// ```
    pub fn backups(mut self, count: u32) -> LogConfig {
        self.backups = count;
        self
    }

    /// Compresses each rotated file (`app.log.1.gz` …), under the rotation
    /// lock, at the fastest level. Needs the `gzip` feature (on by default);
    /// without it, `true` is an error from [`open`](LogConfig::open).
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").max_bytes(4096).gzip(true);
    /// # let _ = config;
    /// ```
    pub fn gzip(mut self, on: bool) -> LogConfig {
        self.gzip = on;
        self
    }

    /// The most bytes one [`LogFile`] value buffers while it waits for a
    /// newline (1 MiB by default): a longer line is written out in pieces of
    /// this size, so memory stays bounded. `0` is an error.
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("app.log").max_record(64 << 10);
    /// # let _ = config;
    /// ```
    pub fn max_record(mut self, bytes: usize) -> LogConfig {
        self.max_record = bytes;
        self
    }

    /// The clock time rotation reads (the system clock by default); for
    /// tests that move time by hand. It is a function pointer, not data: it
    /// does not travel to a spawned child.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime, UNIX_EPOCH};
    /// fn noon() -> SystemTime { UNIX_EPOCH + Duration::from_secs(12 * 3600) }
    /// let config = brood::log::LogConfig::new("app.log").daily().clock(noon);
    /// # let _ = config;
    /// ```
    pub fn clock(mut self, now: fn() -> SystemTime) -> LogConfig {
        self.clock = Some(now);
        self
    }

    /// The log file's path.
    ///
    /// ```
    /// assert_eq!(brood::log::LogConfig::new("a.log").path(), std::path::Path::new("a.log"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the lock file beside the log: `<path>.lock`.
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("/tmp/a.log");
    /// assert_eq!(config.lock_path(), std::path::Path::new("/tmp/a.log.lock"));
    /// ```
    pub fn lock_path(&self) -> PathBuf {
        with_suffix(&self.path, ".lock")
    }

    /// The path of backup `n` (1 is the newest), plain or gzipped.
    ///
    /// ```
    /// let config = brood::log::LogConfig::new("/tmp/a.log");
    /// assert_eq!(config.backup_path(2, true), std::path::Path::new("/tmp/a.log.2.gz"));
    /// ```
    pub fn backup_path(&self, n: u32, gzip: bool) -> PathBuf {
        let suffix = if gzip {
            format!(".{n}.gz")
        } else {
            format!(".{n}")
        };
        with_suffix(&self.path, &suffix)
    }

    /// Checks the configuration, then opens (creating when missing) the log
    /// and its lock file.
    ///
    /// Errors: [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState)
    /// for a zero size, interval or record cap, zero backups on a rotating
    /// log, gzip without the feature, or a path with no file name;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io), naming the path, when the
    /// directory is missing or not writable.
    ///
    /// ```
    /// use brood::ErrorKind;
    /// use brood::log::LogConfig;
    ///
    /// let err = LogConfig::new("/tmp/x.log").max_bytes(0).open().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidState);
    /// let err = LogConfig::new("/no/such/dir/x.log").open().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Io);
    /// ```
    pub fn open(self) -> Result<LogFile> {
        self.validate()?;
        let core = Core::open(self)?;
        Ok(LogFile {
            core: Arc::new(Mutex::new(core)),
            buf: Vec::new(),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.path.file_name().is_none() {
            return Err(Error::invalid(format!(
                "log path {} has no file name",
                self.path.display()
            )));
        }
        if self.max_bytes == Some(0) {
            return Err(Error::invalid(
                "log max_bytes is 0: give a size of at least one byte, or leave it unset for no size rotation",
            ));
        }
        if self.interval_secs == Some(0) {
            return Err(Error::invalid(
                "log rotation interval is under one second: use at least 1 s (every), hourly or daily",
            ));
        }
        if self.rotates() && self.backups == 0 {
            return Err(Error::invalid(
                "log backups is 0 on a rotating log: keep at least 1 backup, or do not set max_bytes/every",
            ));
        }
        if self.max_record == 0 {
            return Err(Error::invalid("log max_record is 0: use at least 1 byte"));
        }
        if self.gzip && !cfg!(feature = "gzip") {
            return Err(Error::invalid(
                "log gzip needs brood's `gzip` feature (on by default)",
            ));
        }
        Ok(())
    }

    fn rotates(&self) -> bool {
        self.max_bytes.is_some() || self.interval_secs.is_some()
    }

    fn now(&self) -> SystemTime {
        self.clock.map_or_else(SystemTime::now, |now| now())
    }

    /// The time period `t` falls in (0 when the log does not rotate by time).
    fn bucket(&self, t: SystemTime) -> u64 {
        match self.interval_secs {
            Some(secs) if secs > 0 => {
                t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) / secs
            }
            _ => 0,
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// A writer onto the shared log: `Write` buffers bytes until a newline and
/// then appends every complete line with one `write(2)`.
///
/// Clones share the process's descriptor and lock (and are cheap); each
/// value has its own line buffer, so threads should each write through
/// their own clone (as `tracing`'s `MakeWriter` does). Dropping a value
/// writes an unfinished last line, with a newline added. A value that
/// crossed a `fork` reopens the files in the child before its first write.
///
/// ```
/// use std::io::Write;
///
/// let path = std::env::temp_dir().join(format!("brood-logfile-doc-{}.log", std::process::id()));
/// let mut log = brood::log::LogConfig::new(&path).open()?;
/// write!(log, "half a line, ")?;
/// writeln!(log, "then the rest")?;
/// assert_eq!(std::fs::read_to_string(&path)?, "half a line, then the rest\n");
/// # std::fs::remove_file(&path)?;
/// # std::fs::remove_file(format!("{}.lock", path.display()))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LogFile {
    core: Arc<Mutex<Core>>,
    buf: Vec<u8>,
}

impl Clone for LogFile {
    fn clone(&self) -> LogFile {
        LogFile {
            core: Arc::clone(&self.core),
            buf: Vec::new(),
        }
    }
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.core().config.path)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl LogFile {
    /// The configuration this log was opened with.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("brood-cfg-doc-{}.log", std::process::id()));
    /// let log = brood::log::LogConfig::new(&path).backups(2).open()?;
    /// assert_eq!(log.config().path(), path.as_path());
    /// # std::fs::remove_file(&path)?;
    /// # std::fs::remove_file(format!("{}.lock", path.display()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> LogConfig {
        self.core().config.clone()
    }

    /// Writes `record` now, as one `write(2)` (a newline is added when it
    /// lacks one), bypassing this value's buffer: the primitive the
    /// `log` and `tracing` integrations use.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("brood-rec-doc-{}.log", std::process::id()));
    /// let log = brood::log::LogConfig::new(&path).open()?;
    /// log.write_record(b"one record")?;
    /// assert_eq!(std::fs::read_to_string(&path)?, "one record\n");
    /// # std::fs::remove_file(&path)?;
    /// # std::fs::remove_file(format!("{}.lock", path.display()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_record(&self, record: &[u8]) -> io::Result<()> {
        if record.ends_with(b"\n") {
            self.emit(record)
        } else {
            let mut owned = Vec::with_capacity(record.len() + 1);
            owned.extend_from_slice(record);
            owned.push(b'\n');
            self.emit(&owned)
        }
    }

    /// How many records this process failed to write (disk full, …): the
    /// `tracing` and `log` integrations cannot return the error, so they
    /// count it here.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("brood-err-doc-{}.log", std::process::id()));
    /// let log = brood::log::LogConfig::new(&path).open()?;
    /// assert_eq!(log.write_errors(), 0);
    /// # std::fs::remove_file(&path)?;
    /// # std::fs::remove_file(format!("{}.lock", path.display()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_errors(&self) -> u64 {
        self.core().write_errors
    }

    /// The last rotation that failed in this process (a backup that could
    /// not be renamed or compressed), if any. The records went on into the
    /// current file; the rotation is retried at most once a second.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("brood-rot-doc-{}.log", std::process::id()));
    /// let log = brood::log::LogConfig::new(&path).open()?;
    /// assert!(log.rotation_error().is_none());
    /// # std::fs::remove_file(&path)?;
    /// # std::fs::remove_file(format!("{}.lock", path.display()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rotation_error(&self) -> Option<String> {
        self.core().rotation_error.clone()
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the core leaves it consistent (every step
        // re-reads the file system), so a poisoned lock is still usable.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, record: &[u8]) -> io::Result<()> {
        let mut core = self.core();
        let result = core.write_record(record);
        if result.is_err() {
            core.write_errors += 1;
        }
        result
    }

    /// Writes every complete line buffered, then, while the unfinished rest
    /// is over the cap, pieces of it.
    fn drain(&mut self) -> io::Result<()> {
        let cap = self.core().config.max_record;
        let result = match self.buf.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let result = self.emit(&self.buf[..=last]);
                self.buf.drain(..=last);
                result
            }
            None => Ok(()),
        };
        result?;
        while self.buf.len() >= cap {
            let result = self.emit(&self.buf[..cap]);
            self.buf.drain(..cap);
            result?;
        }
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.ends_with(b"\n") {
            // The common case (a formatter's whole line): no copy.
            self.emit(data)?;
            return Ok(data.len());
        }
        self.buf.extend_from_slice(data);
        self.drain()?;
        Ok(data.len())
    }

    /// Writes the complete lines buffered; an unfinished line stays until
    /// its newline arrives (or this value is dropped), so that it is not
    /// split from its end.
    fn flush(&mut self) -> io::Result<()> {
        self.drain()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = self.drain();
        if !self.buf.is_empty() {
            self.buf.push(b'\n');
            let _ = self.emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// What the shared-lock check found.
enum Step {
    Written,
    Reopen,
    Rotate,
}

/// The process's side of the shared log: the open file, its identity, and
/// the lock file.
struct Core {
    config: LogConfig,
    /// The pid that opened `file` and `lock`; another pid means a fork.
    pid: u32,
    file: File,
    dev: u64,
    ino: u64,
    /// The time bucket of `file` (from the lock file's state line).
    period: u64,
    lock: File,
    /// The lock file's shared words (`W_INO`, `W_SIZE`); `None` when the
    /// lock file could not be extended or mapped (e.g. a file-size limit
    /// under 4 KiB): this process then writes under the shared lock.
    shared: Option<Arc<FileWords>>,
    /// When this process last checked the path itself under the lock.
    checked: Instant,
    write_errors: u64,
    rotation_error: Option<String>,
    retry_rotation_at: Option<Instant>,
}

/// The state line in the lock file: which inode is the current log, and
/// the time bucket it belongs to.
#[derive(Debug, PartialEq, Eq)]
struct State {
    ino: u64,
    period: u64,
}

impl State {
    fn parse(text: &str) -> Option<State> {
        let mut words = text.lines().next()?.split(' ');
        if words.next()? != "brood-log" || words.next()? != "1" {
            return None;
        }
        let ino = words.next()?.strip_prefix("ino=")?.parse().ok()?;
        let period = words.next()?.strip_prefix("period=")?.parse().ok()?;
        Some(State { ino, period })
    }

    fn render(&self) -> String {
        format!("brood-log 1 ino={} period={}\n", self.ino, self.period)
    }
}

fn os_err(what: &str, path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| os_err("opening log file", path, e))
}

/// Extends the lock file to [`LOCK_FILE_LEN`] (under its lock) and maps it.
fn map_lock(lock: &File) -> io::Result<FileWords> {
    {
        let _exclusive = Held::take(lock, FlockOp::Exclusive)?;
        if lock.metadata()?.len() < LOCK_FILE_LEN as u64 {
            lock.set_len(LOCK_FILE_LEN as u64)?;
        }
    }
    FileWords::map(lock, LOCK_FILE_LEN)
}

fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| os_err("opening log lock file", path, e))
}

/// Holds an `flock` on the lock file for a scope; dropping it unlocks.
struct Held<'a>(&'a File);

impl<'a> Held<'a> {
    fn take(lock: &'a File, op: FlockOp) -> io::Result<Held<'a>> {
        flock(lock, op)?;
        Ok(Held(lock))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = flock(self.0, FlockOp::Unlock);
    }
}

impl Core {
    fn open(config: LogConfig) -> Result<Core> {
        let lock = open_lock(&config.lock_path())
            .map_err(|e| Error::os_error("opening the log's lock file", e))?;
        let shared = map_lock(&lock).ok().map(Arc::new);
        let file =
            open_log(&config.path).map_err(|e| Error::os_error("opening the log file", e))?;
        let mut core = Core {
            config,
            pid: crate::os::pid::current().as_raw() as u32,
            file,
            dev: 0,
            ino: 0,
            period: 0,
            lock,
            shared,
            checked: Instant::now(),
            write_errors: 0,
            rotation_error: None,
            retry_rotation_at: None,
        };
        core.reopen()
            .map_err(|e| Error::os_error("opening the log file", e))?;
        Ok(core)
    }

    /// After a fork the lock file's open description is shared with the
    /// parent (an `flock` taken by one would count for both): open our own.
    fn after_fork(&mut self) -> io::Result<()> {
        let me = crate::os::pid::current().as_raw() as u32;
        if me != self.pid {
            self.lock = open_lock(&self.config.lock_path())?;
            self.pid = me;
            self.reopen()?;
        }
        Ok(())
    }

    fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        self.after_fork()?;
        if !self.config.gzip
            && let Some(shared) = self.shared.clone()
        {
            return self.write_lock_free(&shared, record);
        }
        // Each pass either writes or makes progress (a reopen after someone
        // else's rotation, or a rotation); the bound only guards against a
        // pathological storm of rotations by others.
        for _ in 0..64 {
            let step = {
                let _shared = Held::take(&self.lock, FlockOp::Shared)?;
                self.check_and_write(record)?
            };
            match step {
                Step::Written => return Ok(()),
                Step::Reopen => self.reopen()?,
                Step::Rotate => self.rotate(record.len()),
            }
        }
        let _shared = Held::take(&self.lock, FlockOp::Shared)?;
        self.write_once(record)
    }

    /// Without gzip: one `write(2)` and no lock while the file is current,
    /// no rotation is due and the shared size stays under `max_bytes`;
    /// otherwise the slow path under the exclusive lock (see README.md).
    fn write_lock_free(&mut self, shared: &FileWords, record: &[u8]) -> io::Result<()> {
        let len = record.len() as u64;
        let words = shared.words();
        let fast = words[W_INO].load(Ordering::Acquire) == self.ino
            && !self.period_over()
            && self.checked.elapsed() < RECHECK;
        if fast {
            let Some(max) = self.config.max_bytes else {
                return self.write_once(record);
            };
            let before = words[W_SIZE].fetch_add(len, Ordering::AcqRel);
            if before == 0 || before.saturating_add(len) <= max {
                return self.write_once(record);
            }
            // Over the limit: the slow path decides from the file itself
            // (and resets the shared size), so this reservation is not undone.
        }
        self.write_locked(shared, record)
    }

    /// The slow path: under the exclusive lock, reopen if the path changed,
    /// rotate if due (decided from `stat`), write, count the bytes.
    fn write_locked(&mut self, shared: &FileWords, record: &[u8]) -> io::Result<()> {
        let lock = self.lock.try_clone()?;
        let _exclusive = Held::take(&lock, FlockOp::Exclusive)?;
        match self.rotate_locked(record.len()) {
            Ok(()) => {}
            Err(e) => {
                self.rotation_error = Some(e.to_string());
                self.retry_rotation_at = Some(Instant::now() + ROTATION_RETRY);
            }
        }
        self.checked = Instant::now();
        self.write_once(record)?;
        shared.words()[W_SIZE].fetch_add(record.len() as u64, Ordering::AcqRel);
        Ok(())
    }

    /// With the lock held shared: write if our file is current and no
    /// rotation is due.
    fn check_and_write(&self, record: &[u8]) -> io::Result<Step> {
        let meta = match fs::metadata(&self.config.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Step::Reopen),
            Err(e) => return Err(os_err("checking log file", &self.config.path, e)),
        };
        if meta.ino() != self.ino || meta.dev() != self.dev {
            return Ok(Step::Reopen);
        }
        // An empty file whose period is over is not rotated (no empty
        // backups) but moved to the new period, under the exclusive lock.
        let empty_and_stale = meta.len() == 0 && self.period_over();
        if (self.due(meta.len(), record.len()) || empty_and_stale) && self.may_rotate() {
            return Ok(Step::Rotate);
        }
        self.write_once(record)?;
        Ok(Step::Written)
    }

    /// One `write(2)`: never a second call that could interleave.
    fn write_once(&self, record: &[u8]) -> io::Result<()> {
        let n = (&self.file).write(record)?;
        if n != record.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to log {}: {n} of {} bytes (disk full or file size limit)",
                    self.config.path.display(),
                    record.len()
                ),
            ));
        }
        Ok(())
    }

    /// Rotation is due: the file is not empty, and the record would take it
    /// past `max_bytes`, or its time period is over.
    fn due(&self, size: u64, incoming: usize) -> bool {
        if size == 0 {
            return false;
        }
        if let Some(max) = self.config.max_bytes
            && size.saturating_add(incoming as u64) > max
        {
            return true;
        }
        self.period_over()
    }

    fn period_over(&self) -> bool {
        self.config.interval_secs.is_some() && self.config.bucket(self.config.now()) > self.period
    }

    fn may_rotate(&self) -> bool {
        self.retry_rotation_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Opens the path afresh under the exclusive lock and learns its period.
    fn reopen(&mut self) -> io::Result<()> {
        // A duplicate shares the open description, so it holds the same lock.
        let lock = self.lock.try_clone()?;
        let _exclusive = Held::take(&lock, FlockOp::Exclusive)?;
        self.reopen_locked()
    }

    fn reopen_locked(&mut self) -> io::Result<()> {
        let file = open_log(&self.config.path)?;
        let meta = file.metadata()?;
        let state = self.read_state();
        let period = match state {
            Some(s) if s.ino == meta.ino() => s.period,
            _ => {
                // No state for this inode (a fresh file, or a writer died
                // before recording it): the file's own age decides.
                let born = if meta.len() == 0 {
                    self.config.now()
                } else {
                    meta.modified().unwrap_or_else(|_| self.config.now())
                };
                let period = self.config.bucket(born);
                self.write_state(&State {
                    ino: meta.ino(),
                    period,
                })?;
                period
            }
        };
        self.file = file;
        self.dev = meta.dev();
        self.ino = meta.ino();
        self.period = period;
        // Published already (by the rotating writer, or an earlier reopen):
        // leave the count alone, other writers are adding to it right now.
        let known = self
            .shared
            .as_ref()
            .is_some_and(|s| s.words()[W_INO].load(Ordering::Acquire) == self.ino);
        if !known {
            self.publish(meta.len());
        }
        Ok(())
    }

    /// See [`RESYNC_SLACK`].
    fn resync(&self, len: u64) {
        if let Some(shared) = &self.shared {
            let words = shared.words();
            let counted = words[W_SIZE].load(Ordering::Acquire);
            if counted > len.saturating_add(RESYNC_SLACK) || counted < len {
                words[W_SIZE].store(len, Ordering::Release);
            }
            words[W_INO].store(self.ino, Ordering::Release);
        }
    }

    /// Under the exclusive lock: tell the lock-free writers which file is
    /// current and how long it is (size first, so a writer that sees the new
    /// inode counts against the new size).
    fn publish(&self, size: u64) {
        if let Some(shared) = &self.shared {
            let words = shared.words();
            words[W_SIZE].store(size, Ordering::Release);
            words[W_INO].store(self.ino, Ordering::Release);
        }
    }

    fn read_state(&self) -> Option<State> {
        let mut buf = [0u8; 128];
        let n = self.lock.read_at(&mut buf, 0).ok()?;
        State::parse(std::str::from_utf8(&buf[..n]).ok()?)
    }

    fn write_state(&self, state: &State) -> io::Result<()> {
        let text = state.render();
        // No truncation: the file stays mapped ([`LOCK_FILE_LEN`] bytes);
        // the parser reads the first line only.
        self.lock.write_all_at(text.as_bytes(), 0)
    }

    /// Rotates if, under the exclusive lock, it is still due; a failure is
    /// recorded and the record goes on into the current file.
    fn rotate(&mut self, incoming: usize) {
        let result = self.lock.try_clone().and_then(|lock| {
            let _exclusive = Held::take(&lock, FlockOp::Exclusive)?;
            self.rotate_locked(incoming)
        });
        match result {
            Ok(()) => {
                self.retry_rotation_at = None;
            }
            Err(e) => {
                self.rotation_error = Some(e.to_string());
                self.retry_rotation_at = Some(Instant::now() + ROTATION_RETRY);
            }
        }
    }

    fn rotate_locked(&mut self, incoming: usize) -> io::Result<()> {
        let meta = match fs::metadata(&self.config.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.reopen_locked(),
            Err(e) => return Err(e),
        };
        if meta.ino() != self.ino || meta.dev() != self.dev {
            // Someone else rotated while we waited for the lock.
            return self.reopen_locked();
        }
        if meta.len() == 0 && self.period_over() {
            let period = self.config.bucket(self.config.now());
            self.write_state(&State {
                ino: self.ino,
                period,
            })?;
            self.period = period;
            self.publish(0);
            return Ok(());
        }
        if !self.due(meta.len(), incoming) || !self.may_rotate() {
            // Not due after all. The shared size runs ahead of the file by
            // the records other writers have counted and not yet written;
            // further ahead than [`RESYNC_SLACK`], it is wrong (a writer
            // died between counting and writing, or the file was truncated
            // by someone else): take the size from the file itself.
            self.resync(meta.len());
            return Ok(());
        }
        rotate::shift_backups(&self.config)?;
        fs::rename(&self.config.path, self.config.backup_path(1, false))
            .map_err(|e| os_err("renaming log file", &self.config.path, e))?;
        // The new file: its period is now, whatever the old one's was.
        let file = open_log(&self.config.path)?;
        let meta = file.metadata()?;
        let period = self.config.bucket(self.config.now());
        self.write_state(&State {
            ino: meta.ino(),
            period,
        })?;
        self.file = file;
        self.dev = meta.dev();
        self.ino = meta.ino();
        self.period = period;
        self.publish(0);
        if self.config.gzip {
            rotate::compress_backup(&self.config, 1)?;
        }
        Ok(())
    }
}

/// `t` as RFC 3339 UTC with milliseconds, `2024-05-01T12:00:00.123Z`: the
/// timestamp the `log` backend writes.
#[cfg_attr(not(feature = "log"), allow(dead_code))]
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_line_round_trips_and_rejects_garbage() {
        let s = State { ino: 42, period: 7 };
        assert_eq!(State::parse(&s.render()), Some(s));
        assert_eq!(State::parse(""), None);
        assert_eq!(State::parse("brood-log 1 ino=4"), None);
        assert_eq!(State::parse("brood-log 2 ino=4 period=1\n"), None);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn buckets_line_up_on_the_epoch() {
        let c = LogConfig::new("x").every(Duration::from_secs(3600));
        assert_eq!(c.bucket(UNIX_EPOCH + Duration::from_secs(3599)), 0);
        assert_eq!(c.bucket(UNIX_EPOCH + Duration::from_secs(3600)), 1);
        assert_eq!(LogConfig::new("x").bucket(SystemTime::now()), 0);
    }
}
