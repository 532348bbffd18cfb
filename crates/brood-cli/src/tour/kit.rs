//! The tour's toolkit: printing explanations, forking children that always
//! end with `exit_now`, bounded waits, and small pipes between processes.
//!
//! Rules every topic follows through these helpers:
//! - stdout is flushed before every fork ([`fork_raw`] does it), so a child
//!   never inherits, and prints again, text still in the buffer;
//! - a forked child runs its body under `catch_unwind` and always ends with
//!   [`os::exit_now`], never returning into the tour;
//! - every wait is bounded by [`BOUND`]: the tour cannot hang;
//! - a [`Kid`] that the topic did not reap is killed and reaped when it is
//!   dropped, so an early error leaves neither a zombie nor a stray process.

use std::fmt::Display;
use std::io::{self, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use brood::Process;
use brood::os::{self, ExitStatus, ForkResult, Pid, PidFd, ProcInfo, ProcState, WaitFlags};
use serde::de::DeserializeOwned;

/// The longest any one wait in the tour may last before it gives up.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// The width explanations are wrapped to.
const WIDTH: usize = 78;

/// Prints a paragraph of explanation, wrapped and indented. Blank lines in
/// `text` separate paragraphs.
pub(crate) fn explain(text: &str) {
    for paragraph in text.split("\n\n") {
        let mut line = String::from(" ");
        for word in paragraph.split_whitespace() {
            if columns(&line) + 1 + columns(word) > WIDTH && line.len() > 1 {
                println!("{line}");
                line = String::from(" ");
            }
            line.push(' ');
            line.push_str(word);
        }
        if line.len() > 1 {
            println!("{line}");
        }
        println!();
    }
}

/// How many terminal columns `text` takes: two for each wide (CJK)
/// character, one for the others.
fn columns(text: &str) -> usize {
    text.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6 => 2,
            _ => 1,
        })
        .sum()
}

/// Prints code as a block, each line after `label` (`Python` or `Rust`).
pub(crate) fn code(label: &str, text: &str) {
    for l in text.lines() {
        println!("    {label:<6} | {l}");
    }
    println!();
}

/// Prints the Python equivalent of what comes next.
pub(crate) fn python(text: &str) {
    code("Python", text);
}

/// Prints the reference's code for `section` (`§3`), verbatim: its Chinese
/// strings, and the output it states in its comments (see
/// [`super::reference`]).
pub(crate) fn reference(section: &str, text: &str) {
    println!(
        "  The reference, {section}, verbatim (the output it states, if any, is in its comments):"
    );
    println!();
    code("Python", text);
}

/// Prints what the reference says in `section`, verbatim, where it shows
/// no code for what the topic does; then the Python the tour runs.
pub(crate) fn reference_says(section: &str, words: &str, python_text: &str) {
    println!("  The reference, {section}, in its own words (verbatim):");
    println!();
    for l in words.lines() {
        println!("    {:<6} | {l}", "§");
    }
    println!();
    println!("  In Python, what this topic does:");
    println!();
    code("Python", python_text);
}

/// Prints the Rust that does what the reference's code does, as this topic
/// runs it (shortened: no error handling, bounded waits left out).
pub(crate) fn rust(text: &str) {
    println!("  The same in Rust, as this topic runs it (shortened):");
    println!();
    code("Rust", text);
}

/// Says where the reference is wrong, and what is true.
pub(crate) fn correction(text: &str) {
    explain(&format!("Correction to the reference: {text}"));
}

/// Prints one line of what a process saw or did, labelled with who printed
/// it (`parent`, `child`, ...) and the pid of the process printing it.
pub(crate) fn line(who: &str, text: impl Display) {
    println!("  {who:>10} {:>7} | {text}", os::getpid());
}

/// [`line()`] for another process: `pid` is the process that printed or
/// did it (its stderr, read by the tour through a pipe).
pub(crate) fn line_from(who: &str, pid: impl Display, text: impl Display) {
    println!("  {who:>10} {pid:>7} | {text}");
}

/// Prints a long `text` (an error message) as several [`line()`]s, the first
/// after `head`, the others indented under it.
pub(crate) fn line_wrapped(who: &str, head: &str, text: &str) {
    let mut current = head.to_string();
    for word in text.split_whitespace() {
        if !current.trim().is_empty() && current.len() + 1 + word.len() > 66 {
            line(who, &current);
            current = String::from("  ");
        } else if !current.is_empty() && !current.ends_with(' ') {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.trim().is_empty() {
        line(who, current);
    }
}

/// Prints a process as a row of `brood ps`, under its header.
pub(crate) fn show(infos: &[&ProcInfo]) {
    println!("    {}", crate::ps::HEADER);
    for info in infos {
        println!("    {}", crate::ps::tour_row(info, false));
    }
}

/// [`show`] for a process the tour saw orphaned (its parent changed under
/// its eyes): a parent of PID 1 is then known to be an adoption.
pub(crate) fn show_adopted(info: &ProcInfo) {
    println!("    {}", crate::ps::HEADER);
    println!("    {}", crate::ps::tour_row(info, true));
}

/// Flushes stdout and stderr.
pub(crate) fn flush() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
}

/// Fails unless this process runs exactly one thread: only then may a forked
/// child do anything its parent could (see [`os::fork`]'s safety contract).
pub(crate) fn ensure_single_threaded() -> Result<()> {
    let threads = os::thread_count().context("cannot count this process's threads")?;
    ensure!(
        threads == 1,
        "refusing to fork: this process runs {threads} threads, and a lock another thread \
         holds at the fork would stay locked in the child"
    );
    Ok(())
}

/// Forks (Python's `os.fork()`). The child runs `body` and ends with
/// `exit_now(code)`, `code` being what `body` returned (101 if it panicked);
/// the parent gets the child's pid. stdout is flushed first.
pub(crate) fn fork_raw(body: impl FnOnce() -> i32) -> Result<Pid> {
    ensure_single_threaded()?;
    flush();
    // SAFETY: this process is single-threaded (checked above), so the child
    // may run any code the parent could; it runs `body` and then ends with
    // exit_now, never returning into the tour.
    match unsafe { os::fork() }.context("fork failed")? {
        ForkResult::Child => {
            let code = panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(101);
            flush();
            os::exit_now(code)
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// A process the tour watches through a pidfd: one of its children (which
/// it must reap), or another process (a grandchild, a daemon) whose exit it
/// only waits for.
///
/// On drop, a process still running is sent SIGKILL, and a child not yet
/// reaped is reaped, so that no error path leaves a stray process or a
/// zombie behind.
pub(crate) struct Kid {
    /// The pidfd: race-free waits and signals.
    fd: PidFd,
    /// Whether it is the tour's child (the tour must reap it).
    ours: bool,
    /// Whether it has been reaped (or, for another's process, seen to exit).
    done: bool,
}

impl Kid {
    /// Forks a child that runs `body` (see [`fork_raw`]).
    ///
    /// With `SIGCHLD` ignored, a child that exits at once may be reaped by
    /// the kernel before its pidfd is open (this then fails with `ESRCH`):
    /// such a child must wait for a "go" from the parent before exiting.
    pub(crate) fn fork(body: impl FnOnce() -> i32) -> Result<Kid> {
        let pid = fork_raw(body)?;
        // Nobody else can reap our child, so its pid is still ours to open.
        let fd = PidFd::open(pid).with_context(|| format!("pidfd_open({pid}) failed"))?;
        Ok(Kid {
            fd,
            ours: true,
            done: false,
        })
    }

    /// Watches a process that is not the tour's child.
    pub(crate) fn watch(pid: Pid) -> Result<Kid> {
        let fd = PidFd::open(pid).with_context(|| format!("pidfd_open({pid}) failed"))?;
        Ok(Kid {
            fd,
            ours: false,
            done: false,
        })
    }

    /// Records that the process became the tour's child (adopted through
    /// the subreaper flag): the tour must now reap it.
    pub(crate) fn adopted(&mut self) {
        self.ours = true;
    }

    /// Records that someone else reaped it (`os::wait()`, or the kernel
    /// with `SIGCHLD` ignored).
    pub(crate) fn reaped_elsewhere(&mut self) {
        self.done = true;
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> Pid {
        self.fd.pid()
    }

    /// Sends it `signal` through the pidfd (never to a reused pid).
    pub(crate) fn signal(&self, signal: i32) -> Result<()> {
        self.fd
            .send_signal(signal)
            .with_context(|| format!("cannot send {} to {}", os::signal_name(signal), self.pid()))
    }

    /// Waits, at most [`BOUND`], until it has exited, without reaping it: a
    /// child of the tour is then a zombie.
    pub(crate) fn wait_exit(&self) -> Result<()> {
        let exited = self.fd.wait_timeout(Some(BOUND))?;
        ensure!(exited, "process {} still runs after {BOUND:?}", self.pid());
        Ok(())
    }

    /// Waits for it to exit and reaps it with `waitpid` (Python's
    /// `os.waitpid(pid, 0)`), bounded by [`BOUND`].
    pub(crate) fn join(&mut self) -> Result<ExitStatus> {
        ensure!(self.ours, "process {} is not the tour's child", self.pid());
        self.wait_exit()?;
        let status = reap_exited(self.pid(), WaitFlags::empty())?;
        self.done = true;
        Ok(status)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let _ = self.fd.send_signal(libc::SIGKILL);
        let _ = self.fd.wait_timeout(Some(BOUND));
        if self.ours {
            let _ = self.fd.try_reap();
        }
    }
}

/// A [`brood::Process`] that is killed (if still running) and joined when
/// dropped, so that a topic's early error leaves no stray child behind.
/// Use it as the process itself: it derefs to it.
pub(crate) struct Guarded<R: DeserializeOwned>(pub(crate) Process<R>);

impl<R: DeserializeOwned> Deref for Guarded<R> {
    type Target = Process<R>;
    fn deref(&self) -> &Process<R> {
        &self.0
    }
}

impl<R: DeserializeOwned> DerefMut for Guarded<R> {
    fn deref_mut(&mut self) -> &mut Process<R> {
        &mut self.0
    }
}

impl<R: DeserializeOwned> Drop for Guarded<R> {
    fn drop(&mut self) {
        if self.0.is_alive() {
            let _ = self.0.kill();
            // Joined (bounded) only when it was running: a joined or
            // never-started process has nothing to reap.
            let _ = self.0.join_timeout(BOUND);
        }
    }
}

/// Reaps `pid`, which has exited (or, with `WaitFlags::UNTRACED`, stopped),
/// with `waitpid(pid, flags | WNOHANG)`, retrying for at most a second: the
/// report can trail the pidfd's wake-up by a moment.
pub(crate) fn reap_exited(pid: Pid, flags: WaitFlags) -> Result<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match os::waitpid(Some(pid), flags | WaitFlags::NOHANG)
            .with_context(|| format!("waitpid({pid}) failed"))?
        {
            Some((_, status)) => return Ok(status),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            None => bail!("waitpid({pid}) reported nothing though the process changed state"),
        }
    }
}

/// Reads `pid` from `/proc` until its state is `want`, for at most
/// [`BOUND`].
pub(crate) fn wait_for_state(pid: Pid, want: ProcState) -> Result<ProcInfo> {
    let deadline = Instant::now() + BOUND;
    loop {
        let info = ProcInfo::read(pid).with_context(|| format!("cannot read /proc/{pid}"))?;
        if info.state == want {
            return Ok(info);
        }
        ensure!(
            Instant::now() < deadline,
            "process {pid} is still {} ({}) after {BOUND:?}, not {}",
            info.state,
            info.state.meaning(),
            want
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits, at most `timeout`, for `/proc/PID` to disappear (the process was
/// reaped); returns whether it did.
pub(crate) fn wait_gone(pid: Pid, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ProcInfo::read(pid).is_err() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long the tour watches for an adopter (init, a subreaper) to reap a
/// process that exited. A real init reaps at once, on SIGCHLD; some
/// container inits only now and then.
const ADOPTER_WAIT: Duration = Duration::from_secs(3);

/// Watches the exited process `pid`, adopted by `adopter`, until its
/// adopter reaps it (at most [`ADOPTER_WAIT`]), and says what happened.
/// `who` names it in the sentence ("the grandchild", "the daemon").
pub(crate) fn report_adopter_reap(who: &str, pid: Pid, adopter: Pid) {
    let name = name_of(adopter);
    let started = Instant::now();
    if wait_gone(pid, ADOPTER_WAIT) {
        line(
            "parent",
            format!(
                "{who} exited, and its adopter {adopter} ({name}) reaped it {} ms later: \
                 no zombie, and no wait() in the tour",
                started.elapsed().as_millis()
            ),
        );
    } else {
        line(
            "parent",
            format!(
                "{who} exited, but its adopter {adopter} ({name}) has not reaped it within \
                 {ADOPTER_WAIT:?}: an init that never reaps leaves orphans as zombies (use a \
                 real init, such as tini)"
            ),
        );
    }
}

/// The name of a process (`?` if it cannot be read).
pub(crate) fn name_of(pid: Pid) -> String {
    ProcInfo::read(pid).map_or_else(|_| "?".to_string(), |p| p.name)
}

/// A pipe: `(read end, write end)`, both close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error()).context("pipe2 failed");
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Closes, in a forked child, the child's copy of a pipe end the parent
/// keeps (so that the parent's closing it is seen as end of file).
///
/// Only for a child that ends with `exit_now`: its `OwnedFd` copy is never
/// dropped, so the fd is not closed twice.
pub(crate) fn close_in_child(fd: &OwnedFd) {
    // SAFETY: closes the child's copy of an fd; the OwnedFd that names it is
    // never dropped in this child, which ends with exit_now.
    unsafe { libc::close(fd.as_raw_fd()) };
}

/// Writes `values` to a pipe (for a child reporting to the tour); returns
/// whether all of it was written.
pub(crate) fn send(fd: &OwnedFd, values: &[i32]) -> bool {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for reads of `rest.len()` bytes.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        rest = &rest[n as usize..];
    }
    true
}

/// Waits, at most `deadline`, until `fd` is readable (or at end of file);
/// returns whether it is.
fn readable(fd: &OwnedFd, deadline: Instant) -> Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("poll failed");
        }
    }
}

/// Reads once into `buf`; 0 at end of file.
fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("read failed");
        }
    }
}

/// Reads `n` numbers a child sent with [`send`], waiting at most [`BOUND`].
pub(crate) fn recv(fd: &OwnedFd, n: usize) -> Result<Vec<i32>> {
    let deadline = Instant::now() + BOUND;
    let mut buf = vec![0u8; n * 4];
    let mut filled = 0;
    while filled < buf.len() {
        ensure!(
            readable(fd, deadline)?,
            "no report from the child within {BOUND:?}"
        );
        let got = read_some(fd, &mut buf[filled..])?;
        ensure!(got > 0, "the child closed the pipe before reporting");
        filled += got;
    }
    Ok(buf
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Reads until end of file (every write end closed), waiting at most
/// [`BOUND`] in all.
pub(crate) fn read_all(fd: &OwnedFd) -> Result<Vec<u8>> {
    let deadline = Instant::now() + BOUND;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        ensure!(
            readable(fd, deadline)?,
            "the pipe was not closed within {BOUND:?}"
        );
        match read_some(fd, &mut chunk)? {
            0 => return Ok(out),
            n => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// In a child: waits until every write end of the pipe `fd` reads from is
/// closed — the tour's "go ahead" — for at most [`BOUND`].
pub(crate) fn wait_for_go(fd: &OwnedFd) {
    let deadline = Instant::now() + BOUND;
    let mut byte = [0u8; 1];
    while let Ok(true) = readable(fd, deadline) {
        if !matches!(read_some(fd, &mut byte), Ok(n) if n > 0) {
            return;
        }
    }
}

/// Turns `PR_SET_CHILD_SUBREAPER` off again when dropped.
pub(crate) struct SubreaperOff;

impl Drop for SubreaperOff {
    fn drop(&mut self) {
        let _ = os::set_child_subreaper(false);
    }
}

/// Restores the default `SIGCHLD` action when dropped.
pub(crate) struct DefaultChildren;

impl Drop for DefaultChildren {
    fn drop(&mut self) {
        let _ = os::default_children();
    }
}
