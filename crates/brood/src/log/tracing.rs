//! `LogFile` as a `tracing_subscriber::fmt::MakeWriter`.

use tracing_subscriber::fmt::MakeWriter;

use super::LogFile;

/// Each event gets a clone of the log (its own line buffer); `fmt` writes
/// the formatted line, ending in a newline, in one call, which becomes one
/// `write(2)`.
///
/// ```
/// let path = std::env::temp_dir().join(format!("brood-tracing-doc-{}.log", std::process::id()));
/// let log = brood::log::LogConfig::new(&path).max_bytes(1 << 20).open()?;
/// let subscriber = tracing_subscriber::fmt().with_writer(log).with_ansi(false).finish();
/// tracing::subscriber::with_default(subscriber, || tracing::info!(answer = 42, "hello"));
/// let text = std::fs::read_to_string(&path)?;
/// assert!(text.contains("hello answer=42"), "{text}");
/// # std::fs::remove_file(&path)?;
/// # std::fs::remove_file(format!("{}.lock", path.display()))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFile;

    fn make_writer(&'a self) -> LogFile {
        self.clone()
    }
}
