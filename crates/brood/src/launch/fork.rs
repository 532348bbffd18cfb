//! The fork start method: the child is a copy of the parent and runs the
//! closure directly. Fast, and closures may capture anything.

use std::io;
use std::os::fd::OwnedFd;

use super::{Launched, Launcher, Popen, Spec, Work};
use crate::children;
use crate::os::{self, ForkResult, PidFd};
use crate::task::Fail;

pub(crate) struct Fork;

impl Launcher for Fork {
    #[inline(always)]
    fn launch(&self, spec: Spec, work: &mut Option<Work>) -> io::Result<Launched> {
        if work.is_none() {
            return Err(super::spawn::no_work());
        }
        // Both ends non-blocking (the child's frame writer waits out a full
        // pipe with poll): the last joined child's, else a new one.
        let parent = os::Pid::from_raw(spec.parent_pid).unwrap_or_else(os::pid::current);
        let (read, write) = match SPARE.take(parent) {
            Some(pair) => pair,
            None => os::pipe_cloexec_nonblocking()?,
        };
        super::install_panic_hook();
        // Whether a panic in the child records a backtrace: read here, so
        // the child never reads the environment (std's environment lock may
        // be held by another thread at the fork).
        super::note_backtrace_wish();
        // With SIGCHLD ignored the kernel reaps a child the moment it exits,
        // so a quick child could be gone (and its pid reused) before the
        // parent opens its pidfd: the child then waits for a go first.
        let gate = if os::children_ignored() {
            Some(os::pipe_cloexec()?)
        } else {
            None
        };
        // Hold std's stdout and stderr locks across the fork (stdout
        // flushed first, so the child does not print the parent's pending
        // output again, as Python flushes `sys.stdout`): the child then
        // inherits them held by its own thread and releases them, instead
        // of inheriting them held by another thread for ever (the child
        // flushes stdout at exit, and prints if its function does). The
        // parent waits here for a thread that is printing, as any print
        // would. A process that never ran a second thread has no other
        // thread to fear: it only flushes, and holds neither these locks
        // nor the forkserver client's below (each
        // lock taken and released across the fork is a write, so a
        // copy-on-write fault, on both sides).
        let alone = os::single_threaded();
        let std_streams = if alone {
            super::flush_stdout();
            None
        } else {
            Some(hold_std_streams())
        };
        // Hold the children table across the fork so the child never
        // inherits it locked by another thread.
        // Made of the spec's own strings (moved, not copied): the parent
        // frees only what the child alone needs, after the fork.
        let (start_method, daemon) = (spec.start_method, spec.daemon);
        let mut child_me = spec.into_me();
        // The forkserver client's lock first, then the table's (the order
        // used everywhere): the child inherits neither held by another
        // thread. (The default start method is an atomic: no lock.)
        let client = (!alone).then(super::forkserver::hold_for_fork);
        // brood's reaper thread, if it runs, does not make the fork
        // hazardous (asked before the table is locked: the question locks
        // it too).
        let extra = if alone {
            0
        } else {
            usize::from(children::reaper_running())
        };
        let mut table = children::lock();
        table.reap_orphans();
        // The child runs `child_main`, which ends in `_exit` and never
        // returns into the caller. The fork is refused if other threads run
        // (but for brood's reaper, which needs the table held here) unless
        // the program opted in (`allow_fork_with_threads`).
        match os::sys::fork_checked(extra)? {
            ForkResult::Child => {
                super::PAGE
                    .child
                    .forked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let me = os::pid::current();
                // The parent's own fields land in `child_me`, which this
                // process never drops (it ends in `_exit`).
                table.become_child_as(&mut child_me, me);
                drop(table);
                match client {
                    Some(guard) => super::forkserver::release_in_child(guard),
                    // Alone: its lock is free; the inherited client is
                    // forgotten the first time this process asks for one.
                    None => super::forkserver::close_in_child(),
                }
                // The child starts its own children the way it was started
                // (Python's inherited context).
                crate::start_method::inherit(start_method);
                // Matched here, not dropped: the drop glue of the `Option`
                // is a function of its own, a 64 KiB code window away (a
                // page fault in every child), even when it is `None`.
                if let Some(streams) = std_streams {
                    drop(streams);
                }
                // Closed with a bare syscall: the child would otherwise fault
                // in libc's `close` code for it.
                os::close_now(read);
                if daemon {
                    // Die with the parent, even when it is SIGKILLed.
                    super::die_with_parent(parent);
                }
                // The parent can read the exit status: a `()` result needs
                // no frame (see `child_main`).
                super::PAGE
                    .child
                    .unit_without_frame
                    .store(gate.is_none(), std::sync::atomic::Ordering::Relaxed);
                if let Some((go, hold)) = gate {
                    drop(hold);
                    let mut byte = [0u8; 1];
                    // EOF (the parent closed its end) is the go.
                    let _ = os::read_full(&go, &mut byte);
                }
                // The child's copy of the work, run in place: no lock,
                // no environment, no allocation but the arguments' decoding
                // before the user's function.
                let work = work.take();
                super::child_main_with(
                    move || match work {
                        Some(work) => work.run(),
                        None => Err(Fail::BadArgs("internal error: nothing to run".into())),
                    },
                    write,
                    me,
                )
            }
            ForkResult::Parent { child } => {
                // The arenas' lease for this fork ends with this child.
                crate::shm::arena::forked(child.as_raw());
                drop(client);
                drop(std_streams);
                // Kept: see `Launched::keep`.

                // The child is ours and unreaped, so its pid cannot be reused
                // before this pidfd is open.
                let pidfd = PidFd::open(child);
                drop(gate);
                let pidfd = match pidfd {
                    Ok(fd) => fd,
                    Err(e) => {
                        // The child may have begun; it is killed, and the
                        // work stays ours for another start.
                        let _ = os::kill(child, libc::SIGKILL);
                        let _ = os::waitpid(Some(child), os::WaitFlags::empty());
                        return Err(e);
                    }
                };
                // Our copy of the work (the child runs its own): dropped
                // now, closing the argument fds we held for it.
                drop(work.take());
                table.register(
                    child,
                    children::Entry {
                        // The child's copy of its own name and identity,
                        // reused: every allocation and free here touches
                        // heap pages the child shares.
                        name: child_me.name.take(),
                        identity: std::mem::replace(
                            &mut child_me.identity,
                            children::Ident::main(),
                        ),
                        daemon,
                        served: None,
                    },
                );
                Ok(Launched {
                    popen: Popen::Direct(pidfd),
                    result: read,
                    keep: Some(write),
                })
            }
        }
    }
}

/// The result pipe of the last child joined, for the next one: a pipe costs
/// a `pipe2` and two closes (about 4 µs), a reused one nothing.
static SPARE: os::FdPairSlot = os::FdPairSlot::new();

/// Offers a joined, reaped child's result pipe for reuse (`drained`: the
/// parent last read `EAGAIN` from it, after the reap). Only an empty pipe
/// is kept (else one more read must find nothing): a child that died
/// mid-frame, or
/// a grandchild that wrote to an inherited copy, leaves its pipe unused.
/// Reuse is safe because nothing writes to the pipe after the child is
/// gone: its own children inherit the write end, but only ever write to
/// their own pipes.
pub(crate) fn recycle(read: OwnedFd, write: OwnedFd, drained: bool) {
    if drained || os::is_drained(&read) {
        SPARE.put(os::pid::current(), (read, write));
    }
}

/// Takes std's stdout and stderr locks (in that order, as brood always
/// does) and flushes stdout's buffer.
fn hold_std_streams() -> (std::io::StdoutLock<'static>, std::io::StderrLock<'static>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.flush();
    (out, std::io::stderr().lock())
}
