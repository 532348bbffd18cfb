//! How a child is started: one small launcher seam, one implementation per
//! start method. `Process` knows nothing about how its child came to be; it
//! gets back a [`Popen`] (pid, a sentinel fd that turns readable at exit,
//! reap, signal) and the read end of the result pipe.
//!
//! The result protocol is the same under every start method: the child
//! writes one frame `[tag: u8][len: u64 LE][payload]` to the result pipe and
//! exits. Tag 0: the function returned, payload is the encoded value; tag 1:
//! it panicked, payload is an encoded [`PanicReport`]; tag 2: the value could
//! not be encoded, payload is the message. No complete frame means the child
//! died (or exited) before returning, and its exit status says how.

pub(crate) mod fork;

use std::io;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};

use crate::error::PanicReport;
use crate::os::{self, ExitStatus, Pid, PidFd};

pub(crate) const TAG_RETURNED: u8 = 0;
pub(crate) const TAG_PANICKED: u8 = 1;
pub(crate) const TAG_ENCODE_FAILED: u8 = 2;
pub(crate) const HEADER_LEN: usize = 9;

/// The child's work: runs the user's function and encodes its value (or
/// says why it could not).
pub(crate) type Body = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

/// What a child needs to know about itself.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) identity: Vec<u32>,
}

/// A start method: makes a child that runs `body`.
pub(crate) trait Launcher {
    fn launch(&self, spec: &Spec, body: Body) -> io::Result<Launched>;
}

/// A started child, as the parent sees it.
pub(crate) struct Launched {
    pub(crate) popen: Popen,
    /// Read end of the result pipe (non-blocking, close-on-exec).
    pub(crate) result: OwnedFd,
}

/// The parent's view of one running child, whatever started it.
#[derive(Debug)]
pub(crate) enum Popen {
    /// A direct child held through a pidfd (fork, spawn).
    Direct(PidFd),
}

impl Popen {
    pub(crate) fn pid(&self) -> Pid {
        match self {
            Popen::Direct(fd) => fd.pid(),
        }
    }

    /// The fd that turns readable when the child exits.
    pub(crate) fn sentinel(&self) -> &PidFd {
        match self {
            Popen::Direct(fd) => fd,
        }
    }

    pub(crate) fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        match self {
            Popen::Direct(fd) => fd.try_reap(),
        }
    }

    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        match self {
            Popen::Direct(fd) => fd.send_signal(signal),
        }
    }

    pub(crate) fn into_orphan(self) -> PidFd {
        match self {
            Popen::Direct(fd) => fd,
        }
    }
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<PanicReport>> = const { std::cell::RefCell::new(None) };
}

/// Installs, in the child, a panic hook that records where the panic
/// happened (and a backtrace when `RUST_BACKTRACE` asks for one), then lets
/// the previous hook print as usual.
fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let want_bt = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        let report = PanicReport {
            message: payload_message(info.payload()),
            location: info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
            backtrace: want_bt.then(|| std::backtrace::Backtrace::force_capture().to_string()),
        };
        LAST_PANIC.with(|slot| *slot.borrow_mut() = Some(report));
        previous(info);
    }));
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

/// The child's side of every start method: run the body under
/// `catch_unwind`, write the result frame, clean up its own children, flush
/// stdout, and `_exit` — a panic never unwinds into the parent's code.
pub(crate) fn child_main(body: Body, result: OwnedFd) -> ! {
    install_panic_hook();
    let outcome = panic::catch_unwind(AssertUnwindSafe(body));
    let (tag, payload, code) = match outcome {
        Ok(Ok(bytes)) => (TAG_RETURNED, bytes, 0),
        Ok(Err(message)) => (TAG_ENCODE_FAILED, message.into_bytes(), 1),
        Err(payload) => {
            let report = LAST_PANIC
                .with(|slot| slot.borrow_mut().take())
                .unwrap_or_else(|| PanicReport {
                    message: payload_message(&*payload),
                    location: None,
                    backtrace: None,
                });
            // Leak the payload: dropping it could panic again.
            std::mem::forget(payload);
            let bytes = crate::codec::encode(&report).unwrap_or_default();
            (TAG_PANICKED, bytes, 1)
        }
    };
    let mut header = [0u8; HEADER_LEN];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let _ = os::write_all_raw(&result, &header) && os::write_all_raw(&result, &payload);
    drop(result);
    let _ = panic::catch_unwind(crate::children::exit_cleanup);
    let _ = panic::catch_unwind(|| {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    });
    os::exit_now(code)
}
