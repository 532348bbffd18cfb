//! A backend for the `log` crate that writes into a [`LogFile`].

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{LogFile, rfc3339};
use crate::{Error, Result};

/// A `log::Log` that appends one line per record to a [`LogFile`]:
/// `2024-05-01T12:00:00.123Z INFO  target [pid] message`.
///
/// ```
/// let path = std::env::temp_dir().join(format!("brood-logger-doc-{}.log", std::process::id()));
/// let file = brood::log::LogConfig::new(&path).open()?;
/// let logger = brood::log::Logger::new(file, log::LevelFilter::Info);
/// // `logger.install()` makes it the program's logger; here we call it directly.
/// log::Log::log(&logger, &log::Record::builder()
///     .args(format_args!("hello from {}", "log"))
///     .level(log::Level::Warn)
///     .target("doc")
///     .build());
/// let text = std::fs::read_to_string(&path)?;
/// assert!(text.ends_with(&format!("WARN  doc [{}] hello from log\n", std::process::id())), "{text}");
/// # std::fs::remove_file(&path)?;
/// # std::fs::remove_file(format!("{}.lock", path.display()))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Logger {
    file: LogFile,
    level: ::log::LevelFilter,
}

impl Logger {
    /// A backend writing records at `level` and above into `file`.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("brood-logger-new-{}.log", std::process::id()));
    /// let file = brood::log::LogConfig::new(&path).open()?;
    /// let logger = brood::log::Logger::new(file, log::LevelFilter::Debug);
    /// assert!(log::Log::enabled(&logger, &log::Metadata::builder().level(log::Level::Debug).build()));
    /// # std::fs::remove_file(&path)?;
    /// # std::fs::remove_file(format!("{}.lock", path.display()))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(file: LogFile, level: ::log::LevelFilter) -> Logger {
        Logger { file, level }
    }

    /// Makes this the program's `log` backend and sets the maximum level.
    /// A program has one: a second call is an
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) error.
    ///
    /// ```no_run
    /// let file = brood::log::LogConfig::new("app.log").max_bytes(10 << 20).open()?;
    /// brood::log::Logger::new(file, log::LevelFilter::Info).install()?;
    /// log::info!("lands in app.log, from any process that does the same");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn install(self) -> Result<()> {
        let level = self.level;
        ::log::set_boxed_logger(Box::new(self))
            .map_err(|_| Error::invalid("a `log` backend is already installed in this process"))?;
        ::log::set_max_level(level);
        Ok(())
    }
}

impl ::log::Log for Logger {
    fn enabled(&self, metadata: &::log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &::log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::with_capacity(96);
        let _ = writeln!(
            line,
            "{} {:<5} {} [{}] {}",
            rfc3339(SystemTime::now()),
            record.level(),
            record.target(),
            crate::os::pid::current(),
            record.args()
        );
        // Errors are counted in `LogFile::write_errors`.
        let _ = self.file.write_record(line.as_bytes());
    }

    fn flush(&self) {}
}
