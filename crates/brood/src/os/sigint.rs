//! Ctrl-C routing for pools that ask for it: a SIGINT handler that only
//! writes a byte to each subscribed pipe (the self-pipe trick), installed
//! while at least one subscriber exists and removed (the previous
//! disposition restored) when the last one leaves.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

const SLOTS: usize = 32;

/// Write ends the handler writes to; -1 is a free slot.
static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// The disposition to restore, while the handler is installed.
static INSTALLED: Mutex<Option<(usize, libc::sigaction)>> = Mutex::new(None);

extern "C" fn on_sigint(_: libc::c_int) {
    // SAFETY: reading errno's location is async-signal-safe.
    let errno = unsafe { *libc::__errno_location() };
    for slot in &FDS {
        let fd = slot.load(Ordering::Relaxed);
        if fd >= 0 {
            let byte = 1u8;
            // SAFETY: write(2) is async-signal-safe; `byte` lives for the call.
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        }
    }
    // SAFETY: as above; the handler must not change errno for the code it
    // interrupted.
    unsafe { *libc::__errno_location() = errno };
}

/// A subscription: SIGINT writes a byte into `reader`'s pipe until dropped.
#[derive(Debug)]
pub(crate) struct SigintPipe {
    pub(crate) reader: OwnedFd,
    writer: OwnedFd,
    slot: usize,
}

/// Subscribes to SIGINT; the first subscriber installs the handler.
pub(crate) fn subscribe() -> io::Result<SigintPipe> {
    let (reader, writer) = super::pipe_cloexec()?;
    for fd in [&reader, &writer] {
        // SAFETY: F_SETFL with O_NONBLOCK on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    let slot = FDS
        .iter()
        .position(|s| {
            s.compare_exchange(-1, writer.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
        .ok_or_else(|| io::Error::other("too many pools listen for SIGINT"))?;
    match installed.as_mut() {
        Some((count, _)) => *count += 1,
        None => {
            // SAFETY: an all-zero sigaction is a valid value to fill in.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: zeroed is a valid sigaction for sigaction(2) to fill.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid sigactions for the call; the
            // handler only does async-signal-safe work.
            if unsafe { libc::sigaction(libc::SIGINT, &action, &mut old) } != 0 {
                FDS[slot].store(-1, Ordering::SeqCst);
                return Err(io::Error::last_os_error());
            }
            *installed = Some((1, old));
        }
    }
    Ok(SigintPipe {
        reader,
        writer,
        slot,
    })
}

impl SigintPipe {
    /// Reads what the handler wrote; whether SIGINT arrived since last time.
    pub(crate) fn drain(&self) -> bool {
        let mut any = false;
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: `buf` is writable for its length; the fd is non-blocking.
            let n =
                unsafe { libc::read(self.reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return any;
            }
            any = true;
        }
    }
}

impl Drop for SigintPipe {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        FDS[self.slot].store(-1, Ordering::SeqCst);
        let _ = &self.writer;
        if let Some((count, old)) = installed.as_mut() {
            *count -= 1;
            if *count == 0 {
                // SAFETY: `old` is the disposition sigaction(2) gave us.
                unsafe { libc::sigaction(libc::SIGINT, old, std::ptr::null_mut()) };
                *installed = None;
            }
        }
    }
}

/// In a pool worker: forget the parent's subscriptions a fork copied (so
/// a Ctrl-C here never writes into the parent's pipes) and put back the
/// disposition the parent had before its pools routed SIGINT.
pub(crate) fn forget_in_child() {
    for slot in &FDS {
        slot.store(-1, Ordering::SeqCst);
    }
    // SAFETY: a zeroed sigaction is valid for sigaction(2) to fill.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`.
    if unsafe { libc::sigaction(libc::SIGINT, std::ptr::null(), &mut current) } != 0 {
        return;
    }
    if current.sa_sigaction != on_sigint as extern "C" fn(libc::c_int) as usize {
        return;
    }
    // The lock may have been held by another thread at the fork: then fall
    // back to the default action.
    let old = INSTALLED
        .try_lock()
        .ok()
        .and_then(|guard| guard.as_ref().map(|(_, old)| *old));
    match old {
        // SAFETY: `old` is a disposition sigaction(2) gave the parent.
        Some(old) => unsafe {
            libc::sigaction(libc::SIGINT, &old, std::ptr::null_mut());
        },
        // SAFETY: SIG_DFL is a valid disposition.
        None => unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        },
    }
}

/// Ignores SIGINT in this process (a pool worker whose parent handles
/// Ctrl-C for it).
pub(crate) fn ignore_sigint() -> io::Result<()> {
    // SAFETY: SIG_IGN is a valid disposition; no handler code runs.
    if unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
