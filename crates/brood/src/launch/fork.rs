//! The fork start method: the child is a copy of the parent and runs the
//! closure directly. Fast, and closures may capture anything.

use std::io;

use super::{Launched, Launcher, Popen, Spec, Work};
use crate::children;
use crate::os::{self, ForkResult, PidFd};
use crate::task::Fail;

pub(crate) struct Fork;

impl Launcher for Fork {
    fn launch(&self, spec: &Spec, work: &mut Option<Work>) -> io::Result<Launched> {
        if work.is_none() {
            return Err(super::spawn::no_work());
        }
        // Both ends non-blocking, in one syscall: the child's frame writer
        // waits out a full pipe with poll.
        let (read, write) = os::pipe_cloexec_nonblocking()?;
        super::install_panic_hook();
        // Whether a panic in the child records a backtrace: read here, so
        // the child never reads the environment (std's environment lock may
        // be held by another thread at the fork).
        super::note_backtrace_wish();
        let parent = os::getpid();
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
        // would.
        let std_streams = hold_std_streams();
        // Hold the children table across the fork so the child never
        // inherits it locked by another thread.
        let child_me = children::Me::of(spec);
        // The forkserver client's lock first, then the table's (the order
        // used everywhere): the child inherits neither held by another
        // thread.
        let default_method = crate::context::hold_for_fork();
        let client = super::forkserver::hold_for_fork();
        let mut table = children::lock();
        table.reap_orphans();
        // SAFETY: the child runs `child_main`, which ends in `_exit` and never
        // returns into the caller. Forking a multi-threaded parent is the
        // caller's hazard, documented on `Process` and `os::fork`.
        match unsafe { os::fork() }? {
            ForkResult::Child => {
                super::FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
                table.become_child(child_me);
                drop(table);
                super::forkserver::release_in_child(client);
                drop(default_method);
                drop(std_streams);
                drop(read);
                if spec.daemon {
                    // Die with the parent, even when it is SIGKILLed.
                    super::die_with_parent(parent);
                }
                // The parent can read the exit status: a `()` result needs
                // no frame (see `child_main`).
                super::UNIT_WITHOUT_FRAME
                    .store(gate.is_none(), std::sync::atomic::Ordering::Relaxed);
                if let Some((go, hold)) = gate {
                    drop(hold);
                    let mut byte = [0u8; 1];
                    // EOF (the parent closed its end) is the go.
                    let _ = os::read_full(&go, &mut byte);
                }
                // The child's copy of the work; run in place, nothing
                // allocated before the user's function.
                let work = work.take();
                super::child_main_with(
                    move || match work {
                        Some(work) => work.run(),
                        None => Err(Fail::BadArgs("internal error: nothing to run".into())),
                    },
                    write,
                )
            }
            ForkResult::Parent { child } => {
                drop(client);
                drop(default_method);
                drop(std_streams);
                drop(write);
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
                        name: spec.name.clone(),
                        daemon: spec.daemon,
                        served: None,
                    },
                );
                Ok(Launched {
                    popen: Popen::Direct(pidfd),
                    result: read,
                })
            }
        }
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
