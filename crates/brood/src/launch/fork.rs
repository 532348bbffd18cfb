//! The fork start method: the child is a copy of the parent and runs the
//! closure directly. Fast, and closures may capture anything.

use std::io;

use super::{Launched, Launcher, Popen, Spec, Work, child_main};
use crate::children;
use crate::os::{self, ForkResult, PidFd};

pub(crate) struct Fork;

impl Launcher for Fork {
    fn launch(&self, spec: &Spec, work: Work) -> io::Result<Launched> {
        let body = work.into_body();
        let (read, write) = os::pipe_cloexec()?;
        super::spawn::set_nonblocking(&read)?;
        flush_std_streams();
        super::install_panic_hook();
        let parent = os::getpid();
        // With SIGCHLD ignored the kernel reaps a child the moment it exits,
        // so a quick child could be gone (and its pid reused) before the
        // parent opens its pidfd: the child then waits for a go first.
        let gate = if os::children_ignored() {
            Some(os::pipe_cloexec()?)
        } else {
            None
        };
        // Hold the children table across the fork so the child never
        // inherits it locked by another thread.
        let child_me = children::Me::of(spec);
        // The forkserver client's lock first, then the table's (the order
        // used everywhere): the child inherits neither held by another
        // thread.
        let mut default_method = crate::context::hold_for_fork();
        let client = super::forkserver::hold_for_fork();
        let mut table = children::lock();
        table.reap_orphans();
        // SAFETY: the child runs `child_main`, which ends in `_exit` and never
        // returns into the caller. Forking a multi-threaded parent is the
        // caller's hazard, documented on `Process` and `os::fork`.
        match unsafe { os::fork() }? {
            ForkResult::Child => {
                table.become_child(child_me);
                drop(table);
                super::forkserver::release_in_child(client);
                *default_method = Some(spec.start_method);
                drop(default_method);
                drop(read);
                if spec.daemon {
                    // Die with the parent, even when it is SIGKILLed.
                    super::die_with_parent(parent);
                }
                if let Some((go, hold)) = gate {
                    drop(hold);
                    let mut byte = [0u8; 1];
                    // EOF (the parent closed its end) is the go.
                    let _ = os::read_full(&go, &mut byte);
                }
                child_main(body, write)
            }
            ForkResult::Parent { child } => {
                drop(client);
                drop(default_method);
                drop(write);
                drop(body);
                // The child is ours and unreaped, so its pid cannot be reused
                // before this pidfd is open.
                let pidfd = PidFd::open(child);
                drop(gate);
                let pidfd = match pidfd {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = os::kill(child, libc::SIGKILL);
                        let _ = os::waitpid(Some(child), os::WaitFlags::empty());
                        return Err(e);
                    }
                };
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

/// Flushes Rust's stdout buffer so the child does not print the parent's
/// pending output a second time (Python flushes `sys.stdout` likewise).
fn flush_std_streams() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
